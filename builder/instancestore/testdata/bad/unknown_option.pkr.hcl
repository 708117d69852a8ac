# error: An argument named "no_such_option" is not expected here
source "instancestore" "bad" {
  region         = "us-east-1"
  source_ami     = "ami-12345678"
  ami_name       = "bad-template"
  ssh_username   = "root"
  instance_type  = "m3.medium"
  s3_bucket      = "my-bundles"
  no_such_option = true
}

build {
  sources = ["source.instancestore.bad"]
}

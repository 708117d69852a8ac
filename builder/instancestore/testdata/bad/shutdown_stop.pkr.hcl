# error: shutdown_behavior stop is not possible
source "instancestore" "bad" {
  region            = "us-east-1"
  source_ami        = "ami-12345678"
  ami_name          = "bad-template"
  ssh_username      = "root"
  instance_type     = "m3.medium"
  s3_bucket         = "my-bundles"
  shutdown_behavior = "stop"
}

build {
  sources = ["source.instancestore.bad"]
}

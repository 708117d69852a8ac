# error: instance_type "t3.micro" cannot boot an instance store-backed AMI
source "instancestore" "bad" {
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  ami_name      = "bad-template"
  ssh_username  = "root"
  instance_type = "t3.micro"
  s3_bucket     = "my-bundles"
}

build {
  sources = ["source.instancestore.bad"]
}

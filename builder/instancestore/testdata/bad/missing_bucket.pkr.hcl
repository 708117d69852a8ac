# error: s3_bucket is required
source "instancestore" "bad" {
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  ami_name      = "bad-template"
  ssh_username  = "root"
  instance_type = "m3.medium"
}

build {
  sources = ["source.instancestore.bad"]
}

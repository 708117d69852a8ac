# error: x509_upload_path is not supported: the X.509 key is never copied to the instance
source "instancestore" "bad" {
  region           = "us-east-1"
  source_ami       = "ami-12345678"
  ami_name         = "bad-template"
  ssh_username     = "root"
  instance_type    = "m3.medium"
  s3_bucket        = "my-bundles"
  x509_upload_path = "/tmp"
}

build {
  sources = ["source.instancestore.bad"]
}

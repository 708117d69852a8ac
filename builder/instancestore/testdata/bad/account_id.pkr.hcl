# error: account_id must be a 12-digit AWS account ID
source "instancestore" "bad" {
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  ami_name      = "bad-template"
  ssh_username  = "root"
  instance_type = "m3.medium"
  s3_bucket     = "my-bundles"
  account_id    = "1234-5678"
}

build {
  sources = ["source.instancestore.bad"]
}

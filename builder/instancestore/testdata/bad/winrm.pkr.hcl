# error: communicator winrm cannot be used: the bundling agent runs on Linux only
source "instancestore" "bad" {
  region           = "us-east-1"
  source_ami       = "ami-12345678"
  ami_name         = "bad-template"
  instance_type    = "m3.medium"
  s3_bucket        = "my-bundles"
  communicator     = "winrm"
  winrm_username   = "Administrator"
}

build {
  sources = ["source.instancestore.bad"]
}

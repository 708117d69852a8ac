# error: tpm_support cannot be used: NitroTPM needs a Nitro instance type
source "instancestore" "bad" {
  region           = "us-east-1"
  source_ami       = "ami-12345678"
  ami_name         = "bad-template"
  ssh_username     = "root"
  instance_type    = "m3.medium"
  s3_bucket        = "my-bundles"
  tpm_support      = "v2.0"
}

build {
  sources = ["source.instancestore.bad"]
}

# error: bundle_partition none does not boot as ami_virtualization_type hvm
source "instancestore" "bad" {
  region           = "us-east-1"
  source_ami       = "ami-12345678"
  ami_name         = "bad-template"
  ssh_username     = "root"
  instance_type    = "m3.medium"
  s3_bucket        = "my-bundles"
  bundle_partition = "none"
}

build {
  sources = ["source.instancestore.bad"]
}

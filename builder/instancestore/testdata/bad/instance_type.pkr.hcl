# error: instance_type "t3.micro" runs EBS-backed source AMIs only, and this builder makes hvm AMIs from them
source "instancestore" "bad" {
  region                  = "us-east-1"
  source_ami              = "ami-12345678"
  ami_name                = "bad-template"
  ssh_username            = "root"
  instance_type           = "t3.micro"
  ami_virtualization_type = "paravirtual"
  bundle_partition        = "none"
  s3_bucket               = "my-bundles"
}

build {
  sources = ["source.instancestore.bad"]
}

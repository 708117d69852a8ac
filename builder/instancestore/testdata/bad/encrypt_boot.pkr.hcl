# error: encrypt_boot cannot be used: an instance store-backed AMI has no EBS volume to encrypt
source "instancestore" "bad" {
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  ami_name      = "bad-template"
  ssh_username  = "root"
  instance_type = "m3.medium"
  s3_bucket     = "my-bundles"
  encrypt_boot  = true
}

build {
  sources = ["source.instancestore.bad"]
}

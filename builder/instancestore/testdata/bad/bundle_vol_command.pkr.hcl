# error: bundle_vol_command is not supported
source "instancestore" "bad" {
  region             = "us-east-1"
  source_ami         = "ami-12345678"
  ami_name           = "bad-template"
  ssh_username       = "root"
  instance_type      = "m3.medium"
  s3_bucket          = "my-bundles"
  bundle_vol_command = "sudo -i -n ec2-bundle-vol -k {{.KeyPath}}"
}

build {
  sources = ["source.instancestore.bad"]
}

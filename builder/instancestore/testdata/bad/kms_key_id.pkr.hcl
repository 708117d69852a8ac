# error: kms_key_id and region_kms_key_ids cannot be used
source "instancestore" "bad" {
  region        = "us-east-1"
  source_ami    = "ami-12345678"
  ami_name      = "bad-template"
  ssh_username  = "root"
  instance_type = "m3.medium"
  s3_bucket     = "my-bundles"
  kms_key_id    = "1234abcd-12ab-34cd-56ef-1234567890ab"
}

build {
  sources = ["source.instancestore.bad"]
}

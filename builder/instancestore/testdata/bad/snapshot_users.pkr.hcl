# error: snapshot_users, snapshot_groups, snapshot_tags, snapshot_tag and snapshot_copy_duration_minutes cannot be used
source "instancestore" "bad" {
  region         = "us-east-1"
  source_ami     = "ami-12345678"
  ami_name       = "bad-template"
  ssh_username   = "root"
  instance_type  = "m3.medium"
  s3_bucket      = "my-bundles"
  snapshot_users = ["123456789012"]
}

build {
  sources = ["source.instancestore.bad"]
}

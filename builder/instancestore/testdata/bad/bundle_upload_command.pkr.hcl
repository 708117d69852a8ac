# error: bundle_upload_command is not supported: the instance uploads each part to a presigned URL
source "instancestore" "bad" {
  region                = "us-east-1"
  source_ami            = "ami-12345678"
  ami_name              = "bad-template"
  ssh_username          = "root"
  instance_type         = "m3.medium"
  s3_bucket             = "my-bundles"
  bundle_upload_command = "sudo ec2-upload-bundle -a {{.AccessKey}}"
}

build {
  sources = ["source.instancestore.bad"]
}

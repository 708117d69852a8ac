# error: x509_cert_path and x509_key_path go together: set both
source "instancestore" "bad" {
  region         = "us-east-1"
  source_ami     = "ami-12345678"
  ami_name       = "bad-template"
  ssh_username   = "root"
  instance_type  = "m3.medium"
  s3_bucket      = "my-bundles"
  x509_cert_path = "cert.pem"
}

build {
  sources = ["source.instancestore.bad"]
}

# The build's temporary SSH key stays out of the AMI (acceptance_tempkey_linux_test.go).
# On EC2, cloud-init writes the launch key pair's key into ~/.ssh/authorized_keys; the
# local instances serve it from /run/instance instead, so the first provisioner copies
# it where cloud-init would, next to a key of the user's own that must be kept.

packer {
  required_plugins {
    instancestore = {
      version = ">= 0.1.0"
      source  = "github.com/instancestore/instancestore"
    }
  }
}

variable "s3_bucket" {
  type = string
}

variable "output_dir" {
  type = string
}

variable "own_key" {
  type        = string
  description = "An authorized_keys line of the user's own, which the image keeps."
}

# env() is only allowed in variable defaults.
variable "region" {
  type    = string
  default = env("AWS_REGION")
}

variable "source_ami" {
  type    = string
  default = env("INSTANCESTORE_SOURCE_AMI")
}

variable "ec2_cert_path" {
  type    = string
  default = env("INSTANCESTORE_EC2_CERT")
}

source "instancestore" "tempkey" {
  region                  = var.region
  source_ami              = var.source_ami
  instance_type           = "m3.medium"
  ami_virtualization_type = "paravirtual"
  ami_name                = "tempkey-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  s3_bucket               = var.s3_bucket
  s3_create_bucket        = true
  s3_force_path_style     = true
  ec2_cert_path           = var.ec2_cert_path
  ssh_username            = "admin"
  ssh_interface           = "private_ip"
}

build {
  sources = ["source.instancestore.tempkey"]

  provisioner "shell" {
    inline = [
      "set -e",
      "echo \"temporary key: $(awk '{print $2}' /run/instance/authorized_keys/admin)\"",
      "mkdir -p ~/.ssh && chmod 700 ~/.ssh",
      "cat /run/instance/authorized_keys/admin >> ~/.ssh/authorized_keys",
      "echo '${var.own_key}' >> ~/.ssh/authorized_keys",
      "sudo mkdir -p /root/.ssh",
      "cat ~/.ssh/authorized_keys | sudo tee -a /root/.ssh/authorized_keys >/dev/null",
    ]
  }

  post-processor "manifest" {
    output     = "${var.output_dir}/packer-manifest.json"
    strip_path = true
  }
}

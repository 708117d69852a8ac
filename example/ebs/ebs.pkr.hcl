# Converts an instance store-backed AMI to an EBS-backed one.
#   packer build -var source_ami=ami-... -var x509_key_path=pk.pem example/ebs
packer {
  required_plugins {
    instancestore = {
      source  = "github.com/instancestore/instancestore"
      version = ">= 0.1.0"
    }
  }
}

variable "source_ami" {
  type        = string
  description = "The instance store-backed AMI to convert."
}

variable "x509_key_path" {
  type        = string
  description = "The private key of the certificate the AMI's bundle was made with."
}

variable "region" {
  type    = string
  default = "us-east-1"
}

source "null" "none" {
  communicator = "none"
}

build {
  sources = ["source.null.none"]

  post-processor "instancestore-ebs" {
    region        = var.region
    source_ami    = var.source_ami
    x509_key_path = var.x509_key_path

    helper {
      source_ami_filter {
        filters = {
          name                = "debian-12-amd64-*"
          root-device-type    = "ebs"
          virtualization-type = "hvm"
        }
        owners      = ["136693071363"]
        most_recent = true
      }
      instance_type = "t3.micro"
      ssh_username  = "admin"
    }
  }
}

# The acceptance tests' conversion (acceptance_linux_test.go): the null builder makes
# no machine; instancestore-ebs converts source_ami on a helper instance of
# helper_ami, and the manifest post-processor records the new AMI.
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

variable "helper_ami" {
  type        = string
  description = "The EBS-backed AMI of the helper instance."
}

variable "x509_key_path" {
  type = string
}

variable "ami_name" {
  type = string
}

variable "output_dir" {
  type = string
}

variable "instance_type" {
  type    = string
  default = "t3.micro"
}

source "null" "none" {
  communicator = "none"
}

build {
  sources = ["source.null.none"]

  post-processors {
    post-processor "instancestore-ebs" {
      source_ami          = var.source_ami
      x509_key_path       = var.x509_key_path
      s3_force_path_style = true
      ami_name            = var.ami_name
      ami_description     = "converted from ${var.source_ami}"
      ena_support         = true
      tags = {
        Converted = "yes"
      }

      helper {
        source_ami    = var.helper_ami
        instance_type = var.instance_type
        ssh_username  = "admin"
        ssh_timeout   = "15m"
      }
    }

    post-processor "manifest" {
      output = "${var.output_dir}/packer-manifest.json"
    }
  }
}

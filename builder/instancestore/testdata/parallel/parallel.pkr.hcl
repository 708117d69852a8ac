# Three sources built in parallel into one bucket (acceptance_parallel_linux_test.go).
# var.run names the packer process, so two processes started together do not collide
# on AMI names; var.fail_c makes source c fail in its provisioner.

packer {
  required_plugins {
    instancestore = {
      version = ">= 0.1.0"
      source  = "github.com/instancestore/instancestore"
    }
  }
}

variable "run" {
  type = string
}

variable "fail_c" {
  type    = bool
  default = false
}

variable "s3_bucket" {
  type = string
}

variable "output_dir" {
  type = string
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

source "instancestore" "base" {
  region                  = var.region
  source_ami              = var.source_ami
  instance_type           = "m3.medium"
  ami_virtualization_type = "paravirtual"
  s3_bucket               = var.s3_bucket
  s3_create_bucket        = true
  s3_force_path_style     = true
  ec2_cert_path           = var.ec2_cert_path
  ssh_username            = "admin"
  ssh_interface           = "private_ip"
}

build {
  source "source.instancestore.base" {
    name     = "a"
    ami_name = "par-${var.run}-a"
  }
  source "source.instancestore.base" {
    name     = "b"
    ami_name = "par-${var.run}-b"
  }
  source "source.instancestore.base" {
    name     = "c"
    ami_name = "par-${var.run}-c"
  }

  provisioner "shell" {
    inline = ["echo '${var.run} ${source.name}' | sudo tee /etc/instancestore-par.txt"]
  }

  provisioner "shell" {
    only   = ["instancestore.c"]
    inline = ["test ${var.fail_c} = false || { echo 'source c fails on purpose' >&2; exit 3; }"]
  }

  post-processor "manifest" {
    output     = "${var.output_dir}/packer-manifest.json"
    strip_path = true
    custom_data = {
      bundle_manifest = build.BundleManifest
      source          = source.name
    }
  }
}

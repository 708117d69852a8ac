# Imports a local raw disk image into the local EC2 + S3 environment as an instance
# store-backed AMI, with no instance: Packer's `file` builder hands the image made by
# make-image.sh to the instancestore-import post-processor.
#
#   ./make-image.sh disk.raw hvm
#   eval "$(instancestore-localenv env)"; packer init . && packer build .

packer {
  required_plugins {
    instancestore = {
      version = ">= 0.1.0"
      source  = "github.com/instancestore/instancestore"
    }
  }
}

variable "region" {
  type    = string
  default = env("AWS_REGION")
}

variable "image" {
  type        = string
  default     = "disk.raw"
  description = "The raw image to import (make-image.sh makes one)."
}

variable "image_path" {
  type        = string
  default     = ""
  description = "Optional: import this file instead of the file builder's artifact."
}

variable "s3_bucket" {
  type    = string
  default = "instancestore-import"
}

variable "ec2_cert_path" {
  type        = string
  default     = env("INSTANCESTORE_EC2_CERT")
  description = "The simulator's EC2 certificate: bundles are wrapped for it instead of AWS's."
}

variable "x509_cert_path" {
  type    = string
  default = ""
}

variable "x509_key_path" {
  type    = string
  default = ""
}

variable "ami_kernel_id" {
  type        = string
  default     = ""
  description = "Needed when the image is a bare filesystem (a paravirtual AMI)."
}

variable "output_dir" {
  type    = string
  default = "."
}

source "file" "image" {
  source = var.image
  target = "${var.output_dir}/image${regex("\\.[a-z0-9]+$", var.image)}"
}

build {
  sources = ["source.file.image"]

  post-processor "instancestore-import" {
    region              = var.region
    image_path          = var.image_path
    s3_bucket           = var.s3_bucket
    s3_create_bucket    = true
    s3_force_path_style = true
    ec2_cert_path       = var.ec2_cert_path
    x509_cert_path      = var.x509_cert_path
    x509_key_path       = var.x509_key_path
    ami_kernel_id       = var.ami_kernel_id
    ami_name            = "instancestore-import-${formatdate("YYYYMMDDhhmmss", timestamp())}"
    ami_description     = "Imported by instancestore-import"
    tags = {
      Name = "instancestore-import example"
    }
  }
}

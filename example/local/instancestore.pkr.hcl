# Builds an instance store-backed AMI in the local EC2 + S3 environment
# (`instancestore-localenv up` prints the variables this template reads).
# `make demo` runs it; see scripts/demo-build.sh.

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

variable "source_ami" {
  type        = string
  default     = env("INSTANCESTORE_SOURCE_AMI")
  description = "The seeded instance store-backed base AMI."
}

variable "virtualization_type" {
  type        = string
  default     = "paravirtual"
  description = "paravirtual (source_ami from INSTANCESTORE_SOURCE_AMI) or hvm (INSTANCESTORE_SOURCE_AMI_HVM)."
}

variable "s3_bucket" {
  type        = string
  default     = env("INSTANCESTORE_S3_BUCKET")
  description = "Bucket for the bundle; created when missing. Default instancestore-demo."
}

locals {
  s3_bucket = var.s3_bucket != "" ? var.s3_bucket : "instancestore-demo"
}

variable "ec2_cert_path" {
  type        = string
  default     = env("INSTANCESTORE_EC2_CERT")
  description = "The simulator's EC2 certificate: bundles are wrapped for it instead of AWS's."
}

variable "x509_cert_path" {
  type        = string
  default     = ""
  description = "Optional: your certificate, so that you can unbundle the image later."
}

variable "x509_key_path" {
  type    = string
  default = ""
}

variable "ssh_username" {
  type        = string
  default     = "admin"
  description = "The base AMIs' login user (with passwordless sudo, like ec2-user or ubuntu on AWS)."
}

variable "output_dir" {
  type    = string
  default = "."
}

source "instancestore" "local" {
  region                  = var.region
  source_ami              = var.source_ami
  instance_type           = "m3.medium"
  ami_virtualization_type = var.virtualization_type
  ami_name                = "instancestore-demo-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  ami_description         = "Built by packer-plugin-instancestore from {{ .SourceAMI }}"

  s3_bucket           = local.s3_bucket
  s3_create_bucket    = true
  s3_force_path_style = true
  ec2_cert_path       = var.ec2_cert_path
  x509_cert_path      = var.x509_cert_path
  x509_key_path       = var.x509_key_path

  ssh_username  = var.ssh_username
  ssh_interface = "private_ip"

  tags = {
    Name      = "instancestore-demo"
    SourceAMI = "{{ .SourceAMI }}"
    BuiltBy   = "packer"
  }
}

build {
  sources = ["source.instancestore.local"]

  provisioner "shell" {
    inline = [
      "sudo mkdir -p /etc/instancestore",
      "echo 'provisioned by packer from ${build.SourceAMI}' | sudo tee /etc/instancestore/demo.txt",
    ]
  }

  post-processor "manifest" {
    output     = "${var.output_dir}/packer-manifest.json"
    strip_path = true
    custom_data = {
      source_ami      = build.SourceAMI
      bundle_manifest = build.BundleManifest
    }
  }

  post-processor "shell-local" {
    inline = [
      "echo \"source AMI: ${build.SourceAMI} (${build.SourceAMIName})\"",
      "echo \"bundle manifest: ${build.BundleManifest}\"",
      "echo \"${build.SourceAMI} ${build.BundleManifest}\" > ${var.output_dir}/generated-data.txt",
    ]
  }
}

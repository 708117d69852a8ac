# The ebs_copy acceptance build (acceptance_ebs_copy_linux_test.go): an hvm instance
# store-backed AMI and its EBS-backed copy, from one build in the local environment.
# No X.509 material: the EBS copy is written with the key the host made.

packer {
  required_plugins {
    instancestore = {
      version = ">= 0.1.0"
      source  = "github.com/instancestore/instancestore"
    }
  }
}

variable "source_ami" {
  type    = string
  default = env("INSTANCESTORE_SOURCE_AMI_HVM")
}

variable "region" {
  type    = string
  default = env("AWS_REGION")
}

variable "ec2_cert_path" {
  type    = string
  default = env("INSTANCESTORE_EC2_CERT")
}

variable "s3_bucket" {
  type = string
}

variable "output_dir" {
  type = string
}

source "instancestore" "ebs" {
  region                  = var.region
  source_ami              = var.source_ami
  instance_type           = "m3.medium"
  ami_virtualization_type = "hvm"
  ami_name                = "ebs-copy-acc-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  ami_description         = "Built from {{ .SourceAMI }}"

  s3_bucket           = var.s3_bucket
  s3_create_bucket    = true
  s3_force_path_style = true
  ec2_cert_path       = var.ec2_cert_path

  ssh_username  = "admin"
  ssh_interface = "private_ip"

  tags = {
    Name = "ebs-copy-acc"
  }

  ebs_copy {
    ami_description = "EBS-backed copy, from {{ .SourceAMI }}"
    volume_type     = "gp3"
    tags = {
      Name = "ebs-copy-acc-ebs"
      Kind = "ebs"
    }
  }
}

build {
  sources = ["source.instancestore.ebs"]

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
      bundle_manifest = build.BundleManifest
      ebs_copy_ami    = build.EBSCopyAMI
    }
  }
}

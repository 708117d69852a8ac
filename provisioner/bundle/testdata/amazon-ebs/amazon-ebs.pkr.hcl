# HashiCorp's amazon-ebs builder with the instancestore-bundle provisioner, in the local
# EC2 + S3 environment: amazon-ebs launches the EBS-backed source AMI on a Nitro type,
# a shell provisioner changes the machine, and instancestore-bundle bundles the live
# root to S3 and registers an instance store-backed AMI of it. amazon-ebs then makes its
# own EBS-backed AMI of the same machine (skip_create_ami = true leaves it out).
# The endpoints and credentials come from the environment that `instancestore-localenv
# up` prints (AWS_ENDPOINT_URL_EC2/_S3/_STS, AWS_ACCESS_KEY_ID, ...);
# acceptance_amazon_ebs_linux_test.go runs it. bundle_partition stays `auto`, as on AWS:
# the local instances show their root filesystem as a whole device (no partition
# table to keep), so the image is that filesystem; on AWS `auto` keeps the source
# disk's GPT, BIOS boot partition and boot gap.

packer {
  required_plugins {
    amazon = {
      version = ">= 1.8.2"
      source  = "github.com/hashicorp/amazon"
    }
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
  description = "An EBS-backed hvm AMI with ENA (a Nitro type runs it)."
}

variable "s3_bucket" {
  type = string
}

variable "ec2_cert_path" {
  type        = string
  default     = env("INSTANCESTORE_EC2_CERT")
  description = "The simulator's EC2 certificate: bundles are wrapped for it instead of AWS's."
}

variable "ami_name" {
  type    = string
  default = "amazon-ebs-demo"
}

variable "skip_create_ami" {
  type    = bool
  default = false
}

source "amazon-ebs" "local" {
  region                 = var.region
  skip_region_validation = true
  source_ami             = var.source_ami
  instance_type          = "t3.micro"
  ssh_username           = "admin"
  ami_name               = "${var.ami_name}-ebs"
  skip_create_ami        = var.skip_create_ami

  tags = {
    BuiltBy = "packer"
  }
}

build {
  sources = ["source.amazon-ebs.local"]

  provisioner "shell" {
    inline = [
      "sudo mkdir -p /etc/instancestore",
      "echo 'provisioned under amazon-ebs from ${build.SourceAMI}' | sudo tee /etc/instancestore/amazon-ebs.txt",
      # As cloud-init does on EC2, the key pair's key in ~/.ssh/authorized_keys (the
      # local instances keep it in /run/instance): instancestore-bundle must drop it.
      "if [ -f /run/instance/authorized_keys/admin ]; then mkdir -p ~/.ssh && cat /run/instance/authorized_keys/admin >>~/.ssh/authorized_keys; fi",
    ]
  }

  provisioner "instancestore-bundle" {
    region              = var.region
    s3_bucket           = var.s3_bucket
    s3_create_bucket    = true
    s3_force_path_style = true
    ec2_cert_path       = var.ec2_cert_path
    progress_interval   = "2s"
    ami_name            = "${var.ami_name}-instance-store"
    ami_description     = "instance store-backed, bundled under amazon-ebs from ${build.SourceAMI}"
  }
}

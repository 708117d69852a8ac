# One build on real machines (acceptance_vm_linux_test.go): the source instance is a
# qemu VM that boots the Debian base AMI, gets an instance store volume (ephemeral0 at
# /dev/sdb, formatted by EC2, mounted at /mnt by cloud-init), is provisioned and imaged
# live; the AMI maps ephemeral0 too, so its instances get the volume.

packer {
  required_plugins {
    instancestore = {
      version = ">= 0.1.0"
      source  = "github.com/instancestore/instancestore"
    }
  }
}

variable "source_ami" {
  type = string
}

variable "virtualization_type" {
  type = string
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

variable "ec2_cert_path" {
  type    = string
  default = env("INSTANCESTORE_EC2_CERT")
}

source "instancestore" "vm" {
  region                  = var.region
  source_ami              = var.source_ami
  instance_type           = "m3.medium"
  ami_virtualization_type = var.virtualization_type
  ami_name                = "instancestore-vm-${var.virtualization_type}-${formatdate("YYYYMMDDhhmmss", timestamp())}"

  s3_bucket           = var.s3_bucket
  s3_create_bucket    = true
  s3_force_path_style = true
  ec2_cert_path       = var.ec2_cert_path

  launch_block_device_mappings {
    device_name  = "/dev/sdb"
    virtual_name = "ephemeral0"
  }
  ami_block_device_mappings {
    device_name  = "/dev/sdb"
    virtual_name = "ephemeral0"
  }

  ssh_username  = "admin"
  ssh_interface = "private_ip"
}

build {
  sources = ["source.instancestore.vm"]

  provisioner "shell" {
    inline = [
      "sudo mkdir -p /etc/instancestore",
      "echo 'provisioned by packer from ${build.SourceAMI}' | sudo tee /etc/instancestore/demo.txt",
      "echo \"source kernel: $(uname -r)\"",
      "echo \"source root: $(findmnt -n -o SOURCE /)\"",
      "echo \"source mnt: $(findmnt -n -o SOURCE,FSTYPE /mnt || true)\"",
    ]
  }

  post-processor "manifest" {
    output     = "${var.output_dir}/packer-manifest.json"
    strip_path = true
  }
}

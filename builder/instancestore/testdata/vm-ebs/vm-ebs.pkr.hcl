# The EBS-source build on real machines (acceptance_vm_ebs_linux_test.go): the source
# instance is an m5d.large qemu VM that boots the seeded EBS-backed Debian cloud image
# from its NVMe root volume (/dev/nvme0n1, GPT: root p1, BIOS boot p14, ESP p15) and
# has the type's unformatted NVMe instance store disk, which the agent formats and
# mounts as its scratch. The result is an instance store-backed hvm AMI that maps
# ephemeral0, so that its instances (m3.medium in the test) get the volume at /mnt;
# and, from the ebs_copy block, an EBS-backed AMI of the same image.

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
  instance_type           = "m5d.large"
  ami_virtualization_type = "hvm"
  ami_name                = "instancestore-vm-ebs-${formatdate("YYYYMMDDhhmmss", timestamp())}"

  s3_bucket           = var.s3_bucket
  s3_create_bucket    = true
  s3_force_path_style = true
  ec2_cert_path       = var.ec2_cert_path

  ami_block_device_mappings {
    device_name  = "/dev/sdb"
    virtual_name = "ephemeral0"
  }

  # The same image as an EBS-backed AMI too, for the Nitro types (t3.micro in the test).
  ebs_copy {
    tags = { Name = "instancestore-vm-ebs-copy" }
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
      "echo \"source disks: $(lsblk -dn -o NAME,SERIAL | tr '\\n' ' ')\"",
    ]
  }

  post-processor "manifest" {
    output     = "${var.output_dir}/packer-manifest.json"
    strip_path = true
  }
}

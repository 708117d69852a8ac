# The main real-AWS example: an instance store-backed Debian 12 AMI built from Debian's
# own EBS-backed AMI, the kind of source every distribution publishes today. Needs AWS
# credentials (any method the amazon plugin takes) and an S3 bucket in the build region
# with ACLs enabled.
#
# The build instance is an m5d.large (Nitro, NVMe root): the agent formats its unused
# NVMe instance store disk as scratch, images the root (keeping the GPT table, the BIOS
# boot partition 14 and the EFI system partition 15), renames the root by UUID in the
# image's fstab and grub.cfg if they name /dev/nvme0n1p1, and checks that the kernel has
# the Xen front-ends in its initramfs. The new AMI is hvm and instance store-backed: it
# runs on the instance store families that boot Xen HVM with legacy BIOS, m3, c3, r3,
# i2, d2 and x1 (for example m3.medium or c3.large), and on no current-generation type.
#
#   packer init example/aws
#   packer build -var s3_bucket=my-bundles example/aws
#
# To rebuild on top of the AMI this makes, see example/aws-instance-store.

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "s3_bucket" {
  type        = string
  description = "Bucket (in var.region, ACLs enabled) that receives the bundle."
}

source "instancestore" "debian12" {
  region        = var.region
  instance_type = "m5d.large"
  source_ami_filter {
    filters = {
      name                = "debian-12-amd64-*"
      root-device-type    = "ebs"
      virtualization-type = "hvm"
      architecture        = "x86_64"
    }
    # Debian's account for its official AMIs. Current images are not deprecated, so
    # include_deprecated is not needed.
    owners      = ["136693071363"]
    most_recent = true
  }
  ssh_username = "admin"

  ami_name                = "debian12-instancestore-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  ami_virtualization_type = "hvm"
  # The 8 GiB EBS root becomes an 8 GiB image (at most 10 GiB: EC2's limit for
  # instance store-backed AMIs); set bundle_size (MiB) for another size.
  bundle_exclude = ["/var/cache/apt/archives"]
  # The new AMI's instances get their first instance store volume at /dev/sdb.
  ami_block_device_mappings {
    device_name  = "/dev/sdb"
    virtual_name = "ephemeral0"
  }

  s3_bucket        = var.s3_bucket
  s3_prefix        = "packer/debian12"
  force_deregister = true

  tags = {
    Name = "debian12-instancestore"
  }
}

build {
  sources = ["source.instancestore.debian12"]

  provisioner "shell" {
    inline = [
      "sudo apt-get update",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get -y upgrade",
      # Debian's cloud kernel has xen-blkfront as a module; make sure the initramfs
      # carries it for the Xen instance types (the agent checks it before imaging).
      "echo xen-blkfront | sudo tee -a /etc/initramfs-tools/modules",
      "sudo update-initramfs -u",
    ]
  }
}

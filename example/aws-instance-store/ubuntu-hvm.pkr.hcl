# An instance store-backed Ubuntu HVM AMI from Canonical's hvm-instance images (the
# last ones Canonical published; see amazon-linux.pkr.hcl for this directory's purpose).
# `bundle_partition = "mbr"` keeps the source disk's partition table and boot code, so
# the HVM image boots.
#
#   packer build -only=instancestore.ubuntu-hvm -var s3_bucket=my-bundles example/aws-instance-store

source "instancestore" "ubuntu-hvm" {
  region        = var.region
  instance_type = "c3.large"
  source_ami_filter {
    filters = {
      name                = "ubuntu/images/hvm-instance/ubuntu-*-amd64-server-*"
      root-device-type    = "instance-store"
      virtualization-type = "hvm"
    }
    owners      = ["099720109477"]
    most_recent = true
    # Canonical's hvm-instance images are deprecated; DescribeImages hides deprecated
    # images unless asked (amazon plugin PR #404), so without this the filter matches
    # nothing.
    include_deprecated = true
  }
  ssh_username = "ubuntu"

  ami_name                = "ubuntu-hvm-instancestore-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  ami_virtualization_type = "hvm"
  bundle_partition        = "mbr"
  bundle_destination      = "/mnt"
  bundle_exclude          = ["/var/cache/apt/archives"]
  ami_block_device_mappings {
    device_name  = "/dev/sdb"
    virtual_name = "ephemeral0"
  }

  s3_bucket        = var.s3_bucket
  s3_prefix        = "packer/ubuntu-hvm"
  force_deregister = true

  tags = {
    Name = "ubuntu-hvm-instancestore"
  }
}

build {
  sources = ["source.instancestore.ubuntu-hvm"]

  provisioner "shell" {
    inline = [
      "sudo apt-get update",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get -y upgrade",
    ]
  }
}

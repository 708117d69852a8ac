# Rebuilds your own instance store-backed Debian 12 AMI, for example the newest one
# example/aws made (named debian12-instancestore-*), on an instance store family: the
# source is instance store-backed and hvm, so the build instance must be one of m3, c3,
# r3, i2, d2 or x1 (the builder checks this before launching). The c3.large's two
# 16 GB instance store SSDs give the scratch room; the new AMI runs on the same
# families.
#
#   packer build -only=instancestore.debian12-rebuild -var s3_bucket=my-bundles example/aws-instance-store

source "instancestore" "debian12-rebuild" {
  region        = var.region
  instance_type = "c3.large"
  source_ami_filter {
    filters = {
      name                = "debian12-instancestore-*"
      root-device-type    = "instance-store"
      virtualization-type = "hvm"
    }
    # Your own AMIs: they are not deprecated unless you deprecated them, so
    # include_deprecated is not needed.
    owners      = ["self"]
    most_recent = true
  }
  ssh_username = "admin"

  ami_name                = "debian12-instancestore-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  ami_description         = "Debian 12, instance store-backed, rebuilt from {{ .SourceAMI }}"
  ami_virtualization_type = "hvm"
  bundle_exclude          = ["/var/cache/apt/archives"]
  ami_block_device_mappings {
    device_name  = "/dev/sdb"
    virtual_name = "ephemeral0"
  }

  s3_bucket = var.s3_bucket
  s3_prefix = "packer/debian12"

  tags = {
    Name      = "debian12-instancestore"
    SourceAMI = "{{ .SourceAMI }}"
  }
}

build {
  sources = ["source.instancestore.debian12-rebuild"]

  provisioner "shell" {
    inline = [
      "sudo apt-get update",
      "sudo DEBIAN_FRONTEND=noninteractive apt-get -y upgrade",
    ]
  }
}

# Instance store-backed sources: the path of HashiCorp's amazon-instance builder, where
# the source AMI is itself instance store-backed and the build instance is of one of
# the families that boot such AMIs (m3, c3, r3, i2, d2, x1 for hvm). Start from
# example/aws (a current EBS-backed Debian 12 AMI) for a first build; this directory is
# for rebuilding an instance store-backed AMI you already have:
#
#   debian12-rebuild.pkr.hcl  your own AMI, for example the one example/aws made
#   amazon-linux.pkr.hcl      Amazon's last S3-backed Amazon Linux AMI (2018.03)
#   ubuntu-hvm.pkr.hcl        Canonical's last hvm-instance Ubuntu images
#
# The two public sources are end-of-life and deprecated; they remain here as a
# migration reference for amazon-instance templates that used them, and for the
# real-AWS acceptance test (builder/instancestore/acceptance_aws_test.go). Needs AWS
# credentials (any method the amazon plugin takes) and an S3 bucket in the build region
# with ACLs enabled.
#
#   packer init example/aws-instance-store
#   packer build -only=instancestore.amazon-linux -var s3_bucket=my-bundles example/aws-instance-store

variable "region" {
  type    = string
  default = "us-east-1"
}

variable "s3_bucket" {
  type        = string
  description = "Bucket (in var.region, ACLs enabled) that receives the bundle."
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

source "instancestore" "amazon-linux" {
  region        = var.region
  instance_type = "m3.medium"
  source_ami_filter {
    filters = {
      name                = "amzn-ami-hvm-*-x86_64-s3"
      root-device-type    = "instance-store"
      virtualization-type = "hvm"
    }
    owners      = ["amazon"]
    most_recent = true
    # Amazon deprecated its last S3-backed Amazon Linux AMIs; DescribeImages hides
    # deprecated images unless asked (amazon plugin PR #404), so without this the
    # filter matches nothing.
    include_deprecated = true
  }
  ssh_username = "ec2-user"

  ami_name        = "amazon-linux-instancestore-${formatdate("YYYYMMDDhhmmss", timestamp())}"
  ami_description = "Amazon Linux, instance store-backed, built from {{ .SourceAMI }}"
  ami_block_device_mappings {
    device_name  = "/dev/sdb"
    virtual_name = "ephemeral0"
  }

  s3_bucket      = var.s3_bucket
  x509_cert_path = var.x509_cert_path
  x509_key_path  = var.x509_key_path
  # The scratch image goes to the instance store volume, not to the root volume.
  bundle_destination = "/media/ephemeral0"

  tags = {
    Name      = "amazon-linux-instancestore"
    SourceAMI = "{{ .SourceAMI }}"
  }
}

build {
  sources = ["source.instancestore.amazon-linux"]

  provisioner "shell" {
    inline = ["sudo yum -y update", "echo built-by-packer | sudo tee /etc/instancestore-build"]
  }

  post-processor "manifest" {
    output = "amazon-linux-manifest.json"
    custom_data = {
      bundle_manifest = build.BundleManifest
    }
  }
}

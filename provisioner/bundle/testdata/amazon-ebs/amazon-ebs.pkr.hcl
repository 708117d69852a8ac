# HashiCorp's amazon-ebs builder with the instancestore-bundle provisioner, in the local
# EC2 + S3 environment: amazon-ebs launches the EBS-backed source AMI on a Nitro type
# (t3.micro: root on NVMe, no instance store), a shell provisioner changes the machine,
# and instancestore-bundle bundles the live root to S3 and registers an instance
# store-backed AMI of it. amazon-ebs then makes its own EBS-backed AMI of the same
# machine (skip_create_ami = true leaves it out).
# The endpoints and credentials come from the environment that `instancestore-localenv
# up` prints (AWS_ENDPOINT_URL_EC2/_S3/_STS, AWS_ACCESS_KEY_ID, ...);
# acceptance_amazon_ebs_linux_test.go runs it on both kinds of machines: on the VM
# machines from the seeded Debian 12 cloud AMI (INSTANCESTORE_SOURCE_AMI_EBS), whose
# GPT disk bundle_partition `auto` keeps (BIOS boot partition, EFI system partition,
# boot gap), as on AWS; on the namespace machines from a cloud-image-shaped disk of the
# lite root. t3.micro has no instance store, so the agent's scratch is /tmp on the root
# filesystem (left out of the image); set bundle_destination to a volume of
# launch_block_device_mappings when the root has less room free than its files use.

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
  # A VM guest boots in minutes under TCG: poll often (the default is every 15 s, 40
  # times) and wait long enough.
  ssh_timeout = "15m"
  aws_polling {
    delay_seconds = 2
    max_attempts  = 900
  }

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
      # What the test checks about the source machine.
      "echo \"source root: $(awk '$2 == \"/\" { print $1 }' /proc/mounts | tail -1)\"",
      "echo \"source disks: $(lsblk -d -n -o NAME,TYPE 2>/dev/null | awk '$2 == \"disk\" { print $1 }' | tr '\\n' ' ')\"",
      "if [ -e /sys/block/nvme0n1/size ]; then echo \"source root volume GiB: $(($(cat /sys/block/nvme0n1/size) / 2097152))\"; fi",
      # The key pair's key in ~/.ssh/authorized_keys, as cloud-init writes it on EC2
      # and on the VM machines (the namespace machines keep it in /run/instance):
      # instancestore-bundle must drop it.
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
    aws_polling {
      delay_seconds = 2
      max_attempts  = 300
    }
    ami_name        = "${var.ami_name}-instance-store"
    ami_description = "instance store-backed, bundled under amazon-ebs from ${build.SourceAMI}"
  }
}

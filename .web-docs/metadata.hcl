# The Packer integrations portal reads this file and the pages next to it
# (README.md, components/<type>/<name>/README.md). The pages are generated from docs/
# by `make generate` (packer-sdc renderdocs, then tools/webdocs); edit docs/, not them.
integration {
  name        = "Instance Store"
  description = "Build instance store-backed (S3-backed) Linux AMIs without Amazon's AMI tools or AWS credentials on the instance."
  identifier  = "packer/instancestore/instancestore"
  docs {
    process_docs    = true
    readme_location = "./README.md"
    external_url    = "https://github.com/instancestore/packer-plugin-instancestore"
  }
  license {
    type = "MPL-2.0"
    url  = "https://github.com/instancestore/packer-plugin-instancestore/blob/main/LICENSE"
  }
  component {
    type = "builder"
    name = "Instance Store"
    slug = "instancestore"
  }
  component {
    type = "provisioner"
    name = "Instance Store Bundle"
    slug = "instancestore-bundle"
  }
  component {
    type = "post-processor"
    name = "Instance Store Import"
    slug = "instancestore-import"
  }
  component {
    type = "post-processor"
    name = "Instance Store to EBS"
    slug = "instancestore-ebs"
  }
}

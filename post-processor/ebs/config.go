//go:generate packer-sdc struct-markdown
//go:generate packer-sdc mapstructure-to-hcl2 -type Config,HelperConfig

package ebspp

import (
	"fmt"
	"os"
	"strings"

	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/common"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/template/config"
	"github.com/hashicorp/packer-plugin-sdk/template/interpolate"

	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
)

// Config is the `instancestore-ebs` post-processor's configuration. It embeds the
// amazon plugin's access configuration; the helper instance that writes the volume
// is configured in a `helper` block with the amazon builders' launch options
// (`source_ami` or `source_ami_filter` of an EBS-backed AMI, `instance_type`,
// `subnet_id`, `ssh_username`, ...).
type Config struct {
	common.PackerConfig    `mapstructure:",squash"`
	awscommon.AccessConfig `mapstructure:",squash"`

	// The instance store-backed AMI to convert. When unset, the AMI of the previous
	// artifact (an `instancestore` builder or `instancestore-import` post-processor)
	// in the build region is converted.
	SourceAMI string `mapstructure:"source_ami" required:"false"`
	// The private key (PEM) of the X.509 certificate the bundle was made with: it
	// unwraps the bundle's key, on the machine running Packer. The key never goes to
	// the helper instance; only the unwrapped AES key travels, over the communicator.
	X509KeyPath string `mapstructure:"x509_key_path" required:"true"`
	// Use path-style S3 addressing to read the manifest (S3-compatible servers).
	S3ForcePathStyle bool `mapstructure:"s3_force_path_style" required:"false"`

	// The name of the new EBS-backed AMI, a template with `{{.SourceAMIName}}` (and
	// the amazon template functions). Default `{{.SourceAMIName}}-ebs`.
	AMIName string `mapstructure:"ami_name" required:"false"`
	// The description of the new AMI (default: the source AMI's).
	AMIDescription string `mapstructure:"ami_description" required:"false"`
	// Tags of the new AMI and its snapshot.
	AMITags map[string]string `mapstructure:"tags" required:"false"`
	// volume_type and volume_size: the same options as the builder's ebs_copy block.
	steps.EBSVolumeOptions `mapstructure:",squash"`
	// Set ENA support on the new AMI (default: as the source AMI).
	ENASupport *bool `mapstructure:"ena_support" required:"false"`

	// The helper instance: an EBS-backed Linux AMI (`source_ami` or
	// `source_ami_filter`), `instance_type`, network and communicator options, as in
	// `amazon-ebs`. It is terminated when the conversion ends.
	Helper HelperConfig `mapstructure:"helper" required:"true"`
	// A linux `instancestore-bundler` binary to run on the helper instead of the
	// embedded agent.
	AgentBinary string `mapstructure:"agent_binary" required:"false"`
	// How the agent is run as root on the helper (default `{{if .Sudo}}sudo -n
	// {{end}}{{.Path}} {{.Args}}`).
	ExecuteCommand string `mapstructure:"execute_command" required:"false"`
	// Where the agent is put on the helper (default /tmp).
	RemoteFolder string `mapstructure:"remote_folder" required:"false"`

	ctx interpolate.Context
}

// HelperConfig is the `helper` block: the amazon builders' run configuration
// (source_ami, source_ami_filter, instance_type, subnet_id, ssh_username, ...).
type HelperConfig struct {
	awscommon.RunConfig `mapstructure:",squash"`
}

// Prepare decodes raws into c, applies defaults and checks every option, returning
// all problems at once. What needs the source AMI is checked in PostProcess, before
// anything is launched.
func (c *Config) Prepare(raws ...interface{}) error {
	c.ctx.Funcs = awscommon.TemplateFuncs
	err := config.Decode(c, &config.DecodeOpts{
		PluginType:         BuilderId,
		Interpolate:        true,
		InterpolateContext: &c.ctx,
		InterpolateFilter: &interpolate.RenderFilter{
			Exclude: []string{"ami_name", "ami_description", "tags", "execute_command", "helper"},
		},
	}, raws...)
	if err != nil {
		return err
	}
	var errs *packersdk.MultiError
	add := func(format string, a ...any) {
		errs = packersdk.MultiErrorAppend(errs, fmt.Errorf(format, a...))
	}
	errs = packersdk.MultiErrorAppend(errs, c.AccessConfig.Prepare(&c.PackerConfig)...)
	if c.Helper.SourceAmi == "" && c.Helper.SourceAmiFilter.Empty() {
		add("helper: source_ami or source_ami_filter is required: an EBS-backed Linux AMI for the helper instance that writes the volume")
	} else {
		errs = packersdk.MultiErrorAppend(errs, c.Helper.Prepare(&c.ctx)...)
	}
	if c.SourceAMI != "" && !strings.HasPrefix(c.SourceAMI, "ami-") {
		add("source_ami %q is not an AMI id (ami-...)", c.SourceAMI)
	}
	if c.X509KeyPath == "" {
		add("x509_key_path is required: the private key of the certificate the bundle was made with unwraps its key")
	} else if _, err := os.Stat(c.X509KeyPath); err != nil {
		add("x509_key_path: %s", err)
	}
	if c.AgentBinary != "" {
		if _, err := os.Stat(c.AgentBinary); err != nil {
			add("agent_binary: %s", err)
		}
	}
	// The checks of every component's EBS volume options (one set of messages).
	errs = packersdk.MultiErrorAppend(errs, c.EBSVolumeOptions.Prepare("")...)
	if c.AMIName == "" {
		c.AMIName = "{{.SourceAMIName}}-ebs"
	}
	if errs != nil && len(errs.Errors) > 0 {
		return errs
	}
	packersdk.LogSecretFilter.Set(c.AccessKey, c.SecretKey, c.Token)
	return nil
}

// Package importpp is the `instancestore-import` post-processor: it bundles a local
// raw disk or filesystem image (a `file` builder's artifact, a debootstrap or mkosi
// image, a qemu builder's raw disk) on the machine running Packer, uploads the bundle
// to S3, registers it as an instance store-backed AMI and returns the same artifact
// as the `instancestore` builder. No instance is launched.
//
// The folder is post-processor/import; `import` is a Go keyword, hence the name.
package importpp

import (
	"context"
	"fmt"

	"github.com/hashicorp/hcl/v2/hcldec"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/multistep/commonsteps"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/packerbuilderdata"

	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore"
	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
)

// BuilderId identifies this post-processor's artifacts.
const BuilderId = "instancestore.post-processor.import"

// PostProcessor is the `instancestore-import` post-processor.
type PostProcessor struct {
	config Config
}

var _ packersdk.PostProcessor = new(PostProcessor)

func (p *PostProcessor) ConfigSpec() hcldec.ObjectSpec { return p.config.FlatMapstructure().HCL2Spec() }

func (p *PostProcessor) Configure(raws ...interface{}) error { return p.config.Prepare(raws...) }

// PostProcess imports the input artifact's image: the step list below is the story.
// It returns keep = true: the input image is kept unless the template sets
// keep_input_artifact = false (Packer's rule: the user's setting wins).
func (p *PostProcessor) PostProcess(ctx context.Context, ui packersdk.Ui, in packersdk.Artifact) (packersdk.Artifact, bool, bool, error) {
	c := &p.config
	client, err := c.NewEC2Client(ctx)
	if err != nil {
		return nil, true, false, err
	}
	awsCfg, err := c.Config(ctx)
	if err != nil {
		return nil, true, false, fmt.Errorf("creating the AWS configuration: %w", err)
	}
	var files []string
	if in != nil {
		files = in.Files()
	}

	state := new(multistep.BasicStateBag)
	state.Put(keyConfig, c)
	state.Put(keyAccessConfig, &c.AccessConfig)
	state.Put(keyAMIConfig, &c.AMIConfig)
	state.Put(keyEC2, client)
	state.Put(keyAWSConfig, awsCfg)
	state.Put(keyUI, ui)
	state.Put(keyRegion, awsCfg.Region)
	state.Put(keySnapshots, map[string][]string{})
	state.Put(keyIntermediary, false)
	generatedData := &packerbuilderdata.GeneratedData{State: state}

	steps := []multistep.Step{
		&stepInspectImage{ImagePath: c.ImagePath, Files: files, Virtualization: c.AMIVirtType, KernelID: c.AMIKernelId},
		&awscommon.StepPreValidate{DestAmiName: c.AMIName, ForceDeregister: c.AMIForceDeregister},
		&steps.StepAccountID{Options: &c.Options},
		&steps.StepPreflightBucket{Options: &c.Options},
		&stepBundleUpload{},
		registerStep(c),
		&awscommon.StepAMIRegionCopy{
			AccessConfig:   &c.AccessConfig,
			Regions:        c.AMIRegions,
			Name:           c.AMIName,
			OriginalRegion: awsCfg.Region,
		},
		&awscommon.StepEnableDeprecation{AccessConfig: &c.AccessConfig, DeprecationTime: c.DeprecationTime},
		&awscommon.StepModifyAMIAttributes{
			Description:  c.AMIDescription,
			Users:        c.AMIUsers,
			Groups:       c.AMIGroups,
			OrgArns:      c.AMIOrgArns,
			OuArns:       c.AMIOuArns,
			ProductCodes: c.AMIProductCodes,
			// imds_support went with RegisterImage already: sent once.
			Ctx:           c.ctx,
			GeneratedData: generatedData,
		},
		&awscommon.StepCreateTags{Tags: c.AMITags, Ctx: c.ctx},
		// Protection comes last, so that a failure of an earlier step can still
		// deregister the AMI (the register step's Cleanup disables it as well).
		&awscommon.StepEnableDeregistrationProtection{AccessConfig: &c.AccessConfig, DeregistrationProtection: &c.DeregistrationProtection},
		&steps.StepManifestLocations{},
	}
	runner := commonsteps.NewRunner(steps, c.PackerConfig, ui)
	runner.Run(ctx, state)

	if err, ok := state.GetOk(keyError); ok {
		return nil, true, false, err.(error)
	}
	if err := ctx.Err(); err != nil {
		return nil, true, false, fmt.Errorf("import cancelled: %w", err)
	}
	images := amis(state)
	if len(images) == 0 {
		return nil, true, false, fmt.Errorf("no AMI was registered")
	}
	b := bundleOf(state)
	manifest := ""
	if b != nil {
		manifest = "s3://" + b.ManifestLocation
	}
	return &Artifact{
		Artifact: &instancestore.Artifact{
			Amis:      images,
			Manifests: manifestLocations(state),
			Config:    awsCfg,
			Access:    &c.AccessConfig,
			StateData: map[string]interface{}{keyGenerated: map[string]interface{}{"BundleManifest": manifest}},
		},
		bucket:  bucketOf(state),
		objects: b.Objects,
	}, true, false, nil
}

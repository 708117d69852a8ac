// Package ebspp is the `instancestore-ebs` post-processor: it converts an instance
// store-backed AMI to an EBS-backed one. It checks the AMI and its bundle first (the
// AMI is instance store-backed, its manifest is readable, the private key unwraps the
// bundle key), then launches a helper instance from an EBS-backed AMI, attaches a new
// volume, has the plugin's agent stream the bundle from S3 onto it (every part's
// SHA-1 and the image digest checked; no scratch copy, zeros not written), snapshots
// the volume and registers the snapshot as the new AMI's root. The helper, its key
// pair and security group and the volume are removed; on failure or cancellation so
// are the snapshot and the AMI.
package ebspp

import (
	"context"
	"fmt"
	"sort"
	"strings"

	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/hashicorp/hcl/v2/hcldec"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-sdk/communicator"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/multistep/commonsteps"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"

	ebssteps "github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
)

// BuilderId identifies this post-processor's artifacts.
const BuilderId = "instancestore.post-processor.ebs"

// PostProcessor is the `instancestore-ebs` post-processor.
type PostProcessor struct {
	config Config
}

var _ packersdk.PostProcessor = new(PostProcessor)

func (p *PostProcessor) ConfigSpec() hcldec.ObjectSpec { return p.config.FlatMapstructure().HCL2Spec() }

func (p *PostProcessor) Configure(raws ...interface{}) error { return p.config.Prepare(raws...) }

// PostProcess converts the AMI: the step list below is the story. The input
// artifact is kept (keep = true) unless the template says otherwise.
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
	ami, err := sourceAMI(c.SourceAMI, in, awsCfg.Region)
	if err != nil {
		return nil, true, false, err
	}

	state := new(multistep.BasicStateBag)
	state.Put(keyConfig, c)
	state.Put(keyAccessConfig, &c.AccessConfig)
	state.Put(keyEC2, client)
	state.Put(keyEC2Full, ec2.NewFromConfig(*awsCfg))
	state.Put(keyIAM, iam.NewFromConfig(*awsCfg))
	state.Put(keyAWSConfig, awsCfg)
	state.Put(keyUI, ui)
	state.Put(keyRegion, awsCfg.Region)
	h := &c.Helper

	steps := []multistep.Step{
		&stepInspectSource{AMI: ami},
		&awscommon.StepSourceAMIInfo{SourceAmi: h.SourceAmi, AmiFilters: h.SourceAmiFilter},
		&awscommon.StepNetworkInfo{
			VpcId: h.VpcId, VpcFilter: h.VpcFilter,
			SecurityGroupIds: h.SecurityGroupIds, SecurityGroupFilter: h.SecurityGroupFilter,
			SubnetId: h.SubnetId, SubnetFilter: h.SubnetFilter,
			AvailabilityZone: h.AvailabilityZone, AssociatePublicIpAddress: h.AssociatePublicIpAddress,
			RequestedMachineType: h.InstanceType,
		},
		&awscommon.StepKeyPair{
			Debug: c.PackerDebug, Comm: &h.Comm, IsRestricted: c.IsChinaCloud(),
			DebugKeyPath: fmt.Sprintf("ec2_%s.pem", c.PackerBuildName), Tags: h.RunTags, Ctx: c.ctx,
		},
		&awscommon.StepSecurityGroup{
			PollingConfig: c.PollingConfig, SecurityGroupFilter: h.SecurityGroupFilter,
			SecurityGroupIds: h.SecurityGroupIds, CommConfig: &h.Comm,
			TemporarySGSourceCidrs: h.TemporarySGSourceCidrs, TemporarySGSourcePublicIp: h.TemporarySGSourcePublicIp,
			IsRestricted: c.IsChinaCloud(), Tags: h.RunTags, Ctx: c.ctx,
		},
		&awscommon.StepIamInstanceProfile{
			PollingConfig: c.PollingConfig, IamInstanceProfile: h.IamInstanceProfile,
			SkipProfileValidation: h.SkipProfileValidation, Tags: h.RunTags, Ctx: c.ctx,
		},
		&awscommon.StepRunSourceInstance{
			PollingConfig: c.PollingConfig, AssociatePublicIpAddress: h.AssociatePublicIpAddress,
			Comm: &h.Comm, Ctx: c.ctx, Debug: c.PackerDebug, EbsOptimized: h.EbsOptimized,
			ExpectedRootDevice: "ebs", InstanceType: h.InstanceType, IsRestricted: c.IsChinaCloud(),
			SourceAMI: h.SourceAmi, Tags: h.RunTags, UserData: h.UserData, UserDataFile: h.UserDataFile,
			InstanceInitiatedShutdownBehavior: "terminate",
			// No extra mappings: the helper boots with its AMI's; a nil builder panics.
			LaunchMappings: awscommon.BlockDevices{},
			HttpEndpoint:   h.Metadata.HttpEndpoint, HttpTokens: h.Metadata.HttpTokens,
			HttpPutResponseHopLimit: h.Metadata.HttpPutResponseHopLimit,
		},
		&communicator.StepConnect{
			Config:    &h.Comm,
			Host:      awscommon.SSHHost(ctx, client, h.SSHInterface, h.Comm.Host()),
			SSHPort:   awscommon.Port(h.SSHInterface, h.Comm.Port()),
			SSHConfig: h.Comm.SSHConfigFunc(),
		},
		newCreateVolume(c, ami),
		&ebssteps.StepAttachVolume{},
		&stepWriteVolume{},
		&ebssteps.StepDetachVolume{},
		newSnapshot(c, ami),
		newRegisterAMI(),
	}
	runner := commonsteps.NewRunner(steps, c.PackerConfig, ui)
	runner.Run(ctx, state)

	if err, ok := state.GetOk(keyError); ok {
		return nil, true, false, err.(error)
	}
	if err := ctx.Err(); err != nil {
		return nil, true, false, fmt.Errorf("conversion cancelled: %w", err)
	}
	id := stringOf(state, keyAMI)
	if id == "" {
		return nil, true, false, fmt.Errorf("no AMI was registered")
	}
	return &awscommon.Artifact{
		Amis:           map[string]string{awsCfg.Region: id},
		BuilderIdValue: BuilderId,
		Config:         awsCfg,
		StateData:      map[string]interface{}{"generated_data": map[string]interface{}{"SourceAMI": ami, "Snapshot": stringOf(state, keySnapshot)}},
	}, true, false, nil
}

// sourceAMI is source_ami, else the build region's AMI of the input artifact (whose
// id is "region:ami-...,region:ami-...", as the amazon builders' and ours).
func sourceAMI(configured string, in packersdk.Artifact, region string) (string, error) {
	if configured != "" {
		return configured, nil
	}
	if in == nil || in.Id() == "" {
		return "", fmt.Errorf("source_ami is not set and there is no input artifact: set source_ami to the instance store-backed AMI to convert")
	}
	var regions []string
	for _, p := range strings.Split(in.Id(), ",") {
		r, id, ok := strings.Cut(p, ":")
		if !ok || !strings.HasPrefix(id, "ami-") {
			return "", fmt.Errorf("the input artifact (%s) is not an AMI: set source_ami, or run after the instancestore builder or instancestore-import", in.BuilderId())
		}
		if r == region {
			return id, nil
		}
		regions = append(regions, r)
	}
	sort.Strings(regions)
	return "", fmt.Errorf("the input artifact has no AMI in the build region %s (only in %s): set region, or source_ami", region, strings.Join(regions, ", "))
}

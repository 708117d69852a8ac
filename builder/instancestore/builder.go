// Package instancestore is the `instancestore` Packer builder: it launches an instance
// store-backed source AMI, runs the template's provisioners, bundles the instance's root
// volume with the plugin's own agent (no Amazon AMI tools, no AWS credentials and no
// private key on the instance), uploads the bundle to S3, registers the AMI and returns
// an artifact that post-processors can chain.
package instancestore

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/iam"
	"github.com/hashicorp/hcl/v2/hcldec"
	awscommon "github.com/hashicorp/packer-plugin-amazon/common"
	"github.com/hashicorp/packer-plugin-amazon/common/clients"
	"github.com/hashicorp/packer-plugin-sdk/communicator"
	"github.com/hashicorp/packer-plugin-sdk/multistep"
	"github.com/hashicorp/packer-plugin-sdk/multistep/commonsteps"
	packersdk "github.com/hashicorp/packer-plugin-sdk/packer"
	"github.com/hashicorp/packer-plugin-sdk/packerbuilderdata"

	"github.com/instancestore/packer-plugin-instancestore/builder/instancestore/steps"
)

// BuilderId identifies this builder's artifacts.
const BuilderId = "instancestore.builder"

// Builder is the `instancestore` builder.
type Builder struct {
	config Config
	runner multistep.Runner
}

var _ packersdk.Builder = new(Builder)

// ConfigSpec is the HCL2 schema of the builder's configuration.
func (b *Builder) ConfigSpec() hcldec.ObjectSpec { return b.config.FlatMapstructure().HCL2Spec() }

// Prepare decodes and validates the configuration and names the generated data the
// builder makes available to templates as build.<Name>.
func (b *Builder) Prepare(raws ...interface{}) ([]string, []string, error) {
	warns, err := b.config.Prepare(raws...)
	if err != nil {
		return nil, warns, err
	}
	return generatedDataNames(), warns, nil
}

// generatedDataNames are the amazon builders' usual names plus BundleManifest and
// EBSCopyAMI (the ebs_copy AMI's id, "" without ebs_copy).
func generatedDataNames() []string {
	return append(awscommon.GetGeneratedDataList(), "BundleManifest", "EBSCopyAMI")
}

// Run builds the AMI: the step list below is the whole story of a build.
func (b *Builder) Run(ctx context.Context, ui packersdk.Ui, hook packersdk.Hook) (packersdk.Artifact, error) {
	c := &b.config
	client, err := c.NewEC2Client(ctx)
	if err != nil {
		return nil, err
	}
	awsCfg, err := c.Config(ctx)
	if err != nil {
		return nil, fmt.Errorf("creating the AWS configuration: %w", err)
	}

	state := new(multistep.BasicStateBag)
	state.Put(keyConfig, c)
	state.Put(keyAccessConfig, &c.AccessConfig)
	state.Put(keyAMIConfig, &c.AMIConfig)
	state.Put(keyEC2, client)
	state.Put(keyIAM, iam.NewFromConfig(*awsCfg))
	state.Put(keyAWSConfig, awsCfg)
	state.Put(keyHook, hook)
	state.Put(keyUI, ui)
	state.Put(keyRegion, awsCfg.Region)
	state.Put(steps.KeyEBSClient, ebsClient(client, awsCfg))
	generatedData := &packerbuilderdata.GeneratedData{State: state}

	b.runner = commonsteps.NewRunner(b.steps(ctx, client, awsCfg, generatedData), c.PackerConfig, ui)
	b.runner.Run(ctx, state)

	// An error stays in the state after -on-error=ask's "retry" made its step
	// pass: only a build that was halted or cancelled failed (else a retried build
	// would report failure and, with no artifact, leave its AMI and bundle behind).
	if err, ok := state.GetOk(keyError); ok && failed(state) {
		return nil, err.(error)
	}
	images := amis(state)
	if len(images) == 0 {
		return nil, nil
	}
	var ebsCopy *EBSCopyAMI
	if id := steps.StateString(state, steps.KeyEBSAMI); id != "" {
		ebsCopy = &EBSCopyAMI{Region: awsCfg.Region, AMI: id, Snapshot: steps.StateString(state, steps.KeyEBSSnapshot)}
		generatedData.Put("EBSCopyAMI", id)
	} else {
		generatedData.Put("EBSCopyAMI", "")
	}
	return &Artifact{
		Amis:      images,
		EBSCopy:   ebsCopy,
		Manifests: manifestLocations(state),
		Bundle:    bundleOf(state),
		Config:    awsCfg,
		Access:    &c.AccessConfig,
		StateData: map[string]interface{}{keyGenerated: state.Get(keyGenerated)},
	}, nil
}

// ebsClient is the client of the EBS steps: the build's EC2 client (with
// custom_endpoint_ec2) when it has what they need, else one from the AWS configuration.
func ebsClient(client clients.Ec2Client, awsCfg *aws.Config) steps.EBSClient {
	if c, ok := client.(steps.EBSClient); ok {
		return c
	}
	return ec2.NewFromConfig(*awsCfg)
}

// steps is the whole story of a build, in order.
func (b *Builder) steps(ctx context.Context, client clients.Ec2Client, awsCfg *aws.Config, generatedData *packerbuilderdata.GeneratedData) []multistep.Step {
	c := &b.config
	list := []multistep.Step{
		&stepSweep{BuildID: c.buildID, PollingConfig: c.PollingConfig},
		&awscommon.StepPreValidate{
			DestAmiName:     c.AMIName,
			ForceDeregister: c.AMIForceDeregister,
			VpcId:           c.VpcId,
			SubnetId:        c.SubnetId,
			HasSubnetFilter: !c.SubnetFilter.Empty(),
		},
	}
	// ebs_copy's AMI name is free too (step_ebs_copy.go).
	list = append(list, b.ebsCopyPreflight()...)
	list = append(list,
		&steps.StepAccountID{Options: &c.Options},
		&awscommon.StepSourceAMIInfo{
			SourceAmi:                c.SourceAmi,
			EnableAMISriovNetSupport: c.AMISriovNetSupport,
			EnableAMIENASupport:      c.AMIENASupport,
			AmiFilters:               c.SourceAmiFilter,
			AMIVirtType:              c.AMIVirtType,
		},
		&stepCheckSourceAMI{InstanceTypes: c.instanceTypes(), Virtualization: c.AMIVirtType},
		&steps.StepPreflightBucket{Options: &c.Options},
		&awscommon.StepNetworkInfo{
			VpcId:                    c.VpcId,
			VpcFilter:                c.VpcFilter,
			SecurityGroupIds:         c.SecurityGroupIds,
			SecurityGroupFilter:      c.SecurityGroupFilter,
			SubnetId:                 c.SubnetId,
			SubnetFilter:             c.SubnetFilter,
			AvailabilityZone:         c.AvailabilityZone,
			AssociatePublicIpAddress: c.AssociatePublicIpAddress,
			RequestedMachineType:     c.InstanceType,
		},
		&awscommon.StepKeyPair{
			Debug:        c.PackerDebug,
			Comm:         &c.RunConfig.Comm,
			IsRestricted: c.IsChinaCloud(),
			DebugKeyPath: fmt.Sprintf("ec2_%s.pem", c.PackerBuildName),
			Tags:         c.RunTags,
			Ctx:          c.ctx,
		},
		&awscommon.StepSecurityGroup{
			PollingConfig:             c.PollingConfig,
			SecurityGroupFilter:       c.SecurityGroupFilter,
			SecurityGroupIds:          c.SecurityGroupIds,
			CommConfig:                &c.RunConfig.Comm,
			TemporarySGSourceCidrs:    c.TemporarySGSourceCidrs,
			TemporarySGSourcePublicIp: c.TemporarySGSourcePublicIp,
			SkipSSHRuleCreation:       c.SSMAgentEnabled(),
			IsRestricted:              c.IsChinaCloud(),
			Tags:                      c.RunTags,
			Ctx:                       c.ctx,
		},
		&awscommon.StepIamInstanceProfile{
			PollingConfig:                             c.PollingConfig,
			IamInstanceProfile:                        c.IamInstanceProfile,
			SkipProfileValidation:                     c.SkipProfileValidation,
			TemporaryIamInstanceProfilePolicyDocument: c.TemporaryIamInstanceProfilePolicyDocument,
			Tags: c.RunTags,
			Ctx:  c.ctx,
		},
		&awscommon.StepCleanupVolumes{LaunchMappings: c.LaunchMappings},
		b.runInstanceStep(awsCfg.Region),
		&awscommon.StepCreateSSMTunnel{
			AwsConfig:        *awsCfg,
			Region:           awsCfg.Region,
			PauseBeforeSSM:   c.PauseBeforeSSM,
			LocalPortNumber:  c.SessionManagerPort,
			RemotePortNumber: c.Comm.Port(),
			SSMAgentEnabled:  c.SSMAgentEnabled(),
			SSHConfig:        &c.Comm.SSH,
		},
		// On a timeout the last lines of the instance's console tell why.
		&stepConnect{Connect: &communicator.StepConnect{
			Config:    &c.RunConfig.Comm,
			Host:      awscommon.SSHHost(ctx, client, c.SSHInterface, c.Comm.Host()),
			SSHPort:   awscommon.Port(c.SSHInterface, c.Comm.Port()),
			SSHConfig: c.RunConfig.Comm.SSHConfigFunc(),
		}},
		&awscommon.StepSetGeneratedData{GeneratedData: generatedData},
		&commonsteps.StepProvision{},
		&commonsteps.StepCleanupTempKeys{Comm: &c.RunConfig.Comm},
		// force_deregister runs before the bundle step: with a fixed s3_prefix and
		// bundle_prefix the old AMI's bundle is where the new one goes.
		&stepDeregisterAMI{
			ForceDeregister: c.AMIForceDeregister,
			KeepBundle:      c.KeepBundleOnDeregister,
			PathStyle:       c.S3ForcePathStyle,
			AMIName:         c.AMIName,
			Regions:         c.AMIRegions,
		},
		&stepBundle{GeneratedData: generatedData},
	)
	// ebs_copy: the EBS-backed AMI of the same image, written from the bundle just
	// uploaded onto a volume of the source instance (step_ebs_copy.go).
	list = append(list, b.ebsCopySteps()...)
	return append(list,
		registerStep(c),
		&awscommon.StepAMIRegionCopy{
			AccessConfig:   &c.AccessConfig,
			Regions:        c.AMIRegions,
			Name:           c.AMIName,
			OriginalRegion: awsCfg.Region,
		},
		&awscommon.StepEnableDeprecation{
			AccessConfig:    &c.AccessConfig,
			DeprecationTime: c.DeprecationTime,
		},
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
		&awscommon.StepCreateTags{
			Tags: c.AMITags,
			Ctx:  c.ctx,
		},
		// Protection comes last, so that a failure of an earlier step can still
		// deregister the AMI (the register step's Cleanup disables it as well).
		&awscommon.StepEnableDeregistrationProtection{
			AccessConfig:             &c.AccessConfig,
			DeregistrationProtection: &c.DeregistrationProtection,
		},
		&steps.StepManifestLocations{},
	)
}

// runInstanceStep launches the source instance, as a spot instance when asked.
func (b *Builder) runInstanceStep(region string) multistep.Step {
	c := &b.config
	if c.IsSpotInstance() {
		return &awscommon.StepRunSpotInstance{
			PollingConfig:                     c.PollingConfig,
			AssociatePublicIpAddress:          c.AssociatePublicIpAddress,
			LaunchMappings:                    c.LaunchMappings,
			BlockDurationMinutes:              c.BlockDurationMinutes,
			Ctx:                               c.ctx,
			Comm:                              &c.RunConfig.Comm,
			Debug:                             c.PackerDebug,
			EbsOptimized:                      c.EbsOptimized,
			IsBurstableInstanceType:           c.RunConfig.IsBurstableInstanceType(),
			EnableUnlimitedCredits:            c.EnableUnlimitedCredits,
			ExpectedRootDevice:                "", // instance store or EBS: stepCheckSourceAMI decides
			FleetTags:                         c.FleetTags,
			HttpEndpoint:                      c.Metadata.HttpEndpoint,
			HttpTokens:                        c.Metadata.HttpTokens,
			HttpPutResponseHopLimit:           c.Metadata.HttpPutResponseHopLimit,
			InstanceMetadataTags:              c.Metadata.InstanceMetadataTags,
			InstanceInitiatedShutdownBehavior: c.InstanceInitiatedShutdownBehavior,
			InstanceType:                      c.InstanceType,
			Region:                            region,
			SourceAMI:                         c.SourceAmi,
			SpotPrice:                         c.SpotPrice,
			SpotTags:                          c.SpotTags,
			Tags:                              c.RunTags,
			SpotInstanceTypes:                 c.SpotInstanceTypes,
			SpotAllocationStrategy:            c.SpotAllocationStrategy,
			UserData:                          c.UserData,
			UserDataFile:                      c.UserDataFile,
		}
	}
	tenancy := c.Placement.Tenancy
	if tenancy == "" {
		tenancy = c.Tenancy
	}
	return &awscommon.StepRunSourceInstance{
		PollingConfig:                     c.PollingConfig,
		AssociatePublicIpAddress:          c.AssociatePublicIpAddress,
		LaunchMappings:                    c.LaunchMappings,
		CapacityReservationPreference:     c.CapacityReservationPreference,
		CapacityReservationId:             c.CapacityReservationId,
		CapacityReservationGroupArn:       c.CapacityReservationGroupArn,
		Comm:                              &c.RunConfig.Comm,
		Ctx:                               c.ctx,
		Debug:                             c.PackerDebug,
		EbsOptimized:                      c.EbsOptimized,
		EnableNitroEnclave:                c.EnableNitroEnclave,
		IsBurstableInstanceType:           c.RunConfig.IsBurstableInstanceType(),
		EnableUnlimitedCredits:            c.EnableUnlimitedCredits,
		ExpectedRootDevice:                "", // instance store or EBS: stepCheckSourceAMI decides
		HttpEndpoint:                      c.Metadata.HttpEndpoint,
		HttpTokens:                        c.Metadata.HttpTokens,
		HttpPutResponseHopLimit:           c.Metadata.HttpPutResponseHopLimit,
		InstanceMetadataTags:              c.Metadata.InstanceMetadataTags,
		InstanceInitiatedShutdownBehavior: c.InstanceInitiatedShutdownBehavior,
		InstanceType:                      c.InstanceType,
		IsRestricted:                      c.IsChinaCloud(),
		SourceAMI:                         c.SourceAmi,
		Tags:                              c.RunTags,
		LicenseSpecifications:             c.LicenseSpecifications,
		HostResourceGroupArn:              c.Placement.HostResourceGroupArn,
		HostId:                            c.Placement.HostId,
		Tenancy:                           tenancy,
		UserData:                          c.UserData,
		UserDataFile:                      c.UserDataFile,
	}
}

package ec2sim

import (
	"crypto/ed25519"
	"crypto/rand"
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
	"github.com/aws/aws-sdk-go-v2/service/sts"
	"golang.org/x/crypto/ssh"
)

func seedDirImage(t *testing.T, s *Server, name, virt string) string {
	t.Helper()
	dir := t.TempDir()
	id, err := s.Seed(SeedImage{Name: name, VirtualizationType: virt, Root: RootSource{Dir: dir}})
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestRegionsZonesAndNetwork(t *testing.T) {
	e := startServer(t, Config{Region: "eu-west-1"})
	ctx := ctxT(t)
	regs, err := e.ec2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{AllRegions: aws.Bool(true)})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, r := range regs.Regions {
		found = found || aws.ToString(r.RegionName) == "eu-west-1" && aws.ToString(r.Endpoint) == "ec2.eu-west-1.amazonaws.com"
	}
	if !found || len(regs.Regions) < 20 {
		t.Fatalf("DescribeRegions: %d regions, eu-west-1 found %v", len(regs.Regions), found)
	}
	one, err := e.ec2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{RegionNames: []string{"us-west-2"}})
	if err != nil || len(one.Regions) != 1 || aws.ToString(one.Regions[0].RegionName) != "us-west-2" {
		t.Fatalf("DescribeRegions us-west-2: %v %+v", err, one)
	}
	_, err = e.ec2.DescribeRegions(ctx, &ec2.DescribeRegionsInput{RegionNames: []string{"mars-north-1"}})
	wantCode(t, err, "InvalidParameterValue")

	azs, err := e.ec2.DescribeAvailabilityZones(ctx, &ec2.DescribeAvailabilityZonesInput{})
	if err != nil || len(azs.AvailabilityZones) != 3 || aws.ToString(azs.AvailabilityZones[0].ZoneName) != "eu-west-1a" ||
		azs.AvailabilityZones[0].State != types.AvailabilityZoneStateAvailable {
		t.Fatalf("DescribeAvailabilityZones: %v %+v", err, azs)
	}

	vpcs, err := e.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("is-default"), Values: []string{"true"}}}})
	if err != nil || len(vpcs.Vpcs) != 1 || !aws.ToBool(vpcs.Vpcs[0].IsDefault) {
		t.Fatalf("DescribeVpcs default: %v %+v", err, vpcs)
	}
	vpcID := aws.ToString(vpcs.Vpcs[0].VpcId)
	subs, err := e.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{Filters: []types.Filter{
		{Name: aws.String("vpc-id"), Values: []string{vpcID}}, {Name: aws.String("availability-zone"), Values: []string{"eu-west-1b"}}}})
	if err != nil || len(subs.Subnets) != 1 || aws.ToString(subs.Subnets[0].AvailabilityZone) != "eu-west-1b" || !aws.ToBool(subs.Subnets[0].DefaultForAz) {
		t.Fatalf("DescribeSubnets: %v %+v", err, subs)
	}
	_, err = e.ec2.DescribeSubnets(ctx, &ec2.DescribeSubnetsInput{SubnetIds: []string{"subnet-0123456789abcdef0"}})
	wantCode(t, err, "InvalidSubnetID.NotFound")
	_, err = e.ec2.DescribeVpcs(ctx, &ec2.DescribeVpcsInput{Filters: []types.Filter{{Name: aws.String("no-such-filter"), Values: []string{"x"}}}})
	wantCode(t, err, "InvalidParameterValue")
}

func TestSecurityGroups(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	def, err := e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupNames: []string{"default"}})
	if err != nil || len(def.SecurityGroups) != 1 {
		t.Fatalf("default group: %v %+v", err, def)
	}
	cg, err := e.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("packer_1"), Description: aws.String("Temporary group for Packer"),
		TagSpecifications: []types.TagSpecification{{ResourceType: types.ResourceTypeSecurityGroup, Tags: []types.Tag{{Key: aws.String("k"), Value: aws.String("v")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("packer_1"), Description: aws.String("again")})
	wantCode(t, err, "InvalidGroup.Duplicate")
	_, err = e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: cg.GroupId,
		IpPermissions: []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22), IpRanges: []types.IpRange{{CidrIp: aws.String("127.0.0.1/32")}}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: cg.GroupId,
		IpPermissions: []types.IpPermission{{IpProtocol: aws.String("tcp"), FromPort: aws.Int32(22), ToPort: aws.Int32(22), IpRanges: []types.IpRange{{CidrIp: aws.String("127.0.0.1/32")}}}}})
	wantCode(t, err, "InvalidPermission.Duplicate")
	_, err = e.ec2.AuthorizeSecurityGroupIngress(ctx, &ec2.AuthorizeSecurityGroupIngressInput{GroupId: cg.GroupId, IpProtocol: aws.String("tcp"), FromPort: aws.Int32(80), ToPort: aws.Int32(80), CidrIp: aws.String("not-a-cidr")})
	wantCode(t, err, "InvalidParameterValue")
	got, err := e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{*cg.GroupId}})
	if err != nil {
		t.Fatal(err)
	}
	g := got.SecurityGroups[0]
	if aws.ToString(g.GroupName) != "packer_1" || len(g.IpPermissions) != 1 || aws.ToInt32(g.IpPermissions[0].FromPort) != 22 ||
		aws.ToString(g.IpPermissions[0].IpRanges[0].CidrIp) != "127.0.0.1/32" || len(g.Tags) != 1 {
		t.Fatalf("group: %+v", g)
	}
	byFilter, err := e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{Filters: []types.Filter{{Name: aws.String("group-name"), Values: []string{"packer_*"}}}})
	if err != nil || len(byFilter.SecurityGroups) != 1 {
		t.Fatalf("filter group-name packer_*: %v %+v", err, byFilter)
	}
	if _, err := e.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: cg.GroupId}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: cg.GroupId})
	wantCode(t, err, "InvalidGroup.NotFound")
	_, err = e.ec2.DescribeSecurityGroups(ctx, &ec2.DescribeSecurityGroupsInput{GroupIds: []string{"bogus"}})
	wantCode(t, err, "InvalidGroupId.Malformed")
	_, err = e.ec2.DeleteSecurityGroup(ctx, &ec2.DeleteSecurityGroupInput{GroupId: def.SecurityGroups[0].GroupId})
	wantCode(t, err, "CannotDelete")
}

func TestKeyPairs(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	kp, err := e.ec2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("packer_abc")})
	if err != nil {
		t.Fatal(err)
	}
	signer, err := ssh.ParsePrivateKey([]byte(aws.ToString(kp.KeyMaterial)))
	if err != nil {
		t.Fatalf("key material is not a usable private key: %v", err)
	}
	if len(strings.Split(aws.ToString(kp.KeyFingerprint), ":")) != 20 {
		t.Fatalf("fingerprint %q is not SHA-1 colon hex", aws.ToString(kp.KeyFingerprint))
	}
	_, err = e.ec2.CreateKeyPair(ctx, &ec2.CreateKeyPairInput{KeyName: aws.String("packer_abc")})
	wantCode(t, err, "InvalidKeyPair.Duplicate")
	pub, _, _ := ed25519.GenerateKey(rand.Reader)
	sp, _ := ssh.NewPublicKey(pub)
	imp, err := e.ec2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("mine"), PublicKeyMaterial: ssh.MarshalAuthorizedKey(sp)})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(aws.ToString(imp.KeyPairId), "key-") {
		t.Fatalf("import: %+v", imp)
	}
	_, err = e.ec2.ImportKeyPair(ctx, &ec2.ImportKeyPairInput{KeyName: aws.String("bad"), PublicKeyMaterial: []byte("ssh-rsa notbase64")})
	wantCode(t, err, "InvalidKey.Format")
	all, err := e.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{IncludePublicKey: aws.Bool(true)})
	if err != nil || len(all.KeyPairs) != 2 {
		t.Fatalf("DescribeKeyPairs: %v %+v", err, all)
	}
	if want := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))); !strings.HasPrefix(aws.ToString(all.KeyPairs[0].PublicKey), want) {
		t.Fatalf("public key of created pair %q does not match its private key %q", aws.ToString(all.KeyPairs[0].PublicKey), want)
	}
	_, err = e.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{"nope"}})
	wantCode(t, err, "InvalidKeyPair.NotFound")
	if _, err := e.ec2.DeleteKeyPair(ctx, &ec2.DeleteKeyPairInput{KeyName: aws.String("packer_abc")}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.DescribeKeyPairs(ctx, &ec2.DescribeKeyPairsInput{KeyNames: []string{"packer_abc"}})
	wantCode(t, err, "InvalidKeyPair.NotFound")
}

func TestDescribeImagesFiltersOwnersAndPaging(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	lite := seedDirImage(t, e.srv, "instancestore-lite-x86_64", "paravirtual")
	hvm := seedDirImage(t, e.srv, "instancestore-lite-hvm-x86_64", "hvm")
	for _, tc := range []struct {
		name string
		in   ec2.DescribeImagesInput
		want []string
	}{
		{"all amazon", ec2.DescribeImagesInput{Owners: []string{"amazon"}}, []string{lite, hvm}},
		{"self owns none", ec2.DescribeImagesInput{Owners: []string{"self"}}, nil},
		{"by id", ec2.DescribeImagesInput{ImageIds: []string{hvm}}, []string{hvm}},
		{"name wildcard", ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"instancestore-lite-*"}}}}, []string{lite, hvm}},
		{"name ?", ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String("name"), Values: []string{"instancestore-lite-x86_6?"}}}}, []string{lite}},
		{"virtualization", ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String("virtualization-type"), Values: []string{"hvm"}}}}, []string{hvm}},
		{"root-device-type ebs", ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String("root-device-type"), Values: []string{"ebs"}}}}, nil},
		{"root-device-type and arch", ec2.DescribeImagesInput{Owners: []string{"amazon"}, Filters: []types.Filter{
			{Name: aws.String("root-device-type"), Values: []string{"instance-store"}}, {Name: aws.String("architecture"), Values: []string{"x86_64"}},
			{Name: aws.String("state"), Values: []string{"available"}}, {Name: aws.String("image-id"), Values: []string{lite}}}}, []string{lite}},
	} {
		out, err := e.ec2.DescribeImages(ctx, &tc.in)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		var got []string
		for _, im := range out.Images {
			got = append(got, aws.ToString(im.ImageId))
		}
		if strings.Join(got, ",") != strings.Join(tc.want, ",") {
			t.Errorf("%s: got %v, want %v", tc.name, got, tc.want)
		}
	}
	out, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{lite}})
	if err != nil {
		t.Fatal(err)
	}
	im := out.Images[0]
	if im.RootDeviceType != types.DeviceTypeInstanceStore || im.VirtualizationType != types.VirtualizationTypeParavirtual ||
		aws.ToString(im.ImageOwnerAlias) != "amazon" || !aws.ToBool(im.Public) || im.State != types.ImageStateAvailable ||
		im.Architecture != types.ArchitectureValuesX8664 || aws.ToString(im.RootDeviceName) != "/dev/sda1" || len(im.BlockDeviceMappings) != 1 {
		t.Fatalf("image: %+v", im)
	}
	// Paging: one per page, tokens chain, all seen.
	var seen []string
	var token *string
	for i := 0; i < 5; i++ {
		p, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{MaxResults: aws.Int32(1), NextToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, im := range p.Images {
			seen = append(seen, aws.ToString(im.ImageId))
		}
		if token = p.NextToken; token == nil {
			break
		}
	}
	if strings.Join(seen, ",") != lite+","+hvm {
		t.Fatalf("paging saw %v", seen)
	}
	_, err = e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{"ami-0123456789abcdef0"}})
	wantCode(t, err, "InvalidAMIID.NotFound")
	_, err = e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{"ami-xyz"}})
	wantCode(t, err, "InvalidAMIID.Malformed")
	_, err = e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{NextToken: aws.String("garbage!")})
	wantCode(t, err, "InvalidPaginationToken")
}

func TestTags(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	id := seedDirImage(t, e.srv, "base", "paravirtual")
	sg, err := e.ec2.CreateSecurityGroup(ctx, &ec2.CreateSecurityGroupInput{GroupName: aws.String("g"), Description: aws.String("d")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id, *sg.GroupId}, Tags: []types.Tag{{Key: aws.String("Name"), Value: aws.String("x")}, {Key: aws.String("env"), Value: aws.String("test")}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{"ami-0123456789abcdef0"}, Tags: []types.Tag{{Key: aws.String("a"), Value: aws.String("b")}}})
	wantCode(t, err, "InvalidAMIID.NotFound")
	_, err = e.ec2.CreateTags(ctx, &ec2.CreateTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: aws.String("aws:x"), Value: aws.String("b")}}})
	wantCode(t, err, "InvalidParameterValue")
	tags, err := e.ec2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{{Name: aws.String("resource-id"), Values: []string{id}}}})
	if err != nil || len(tags.Tags) != 2 || tags.Tags[0].ResourceType != types.ResourceTypeImage || aws.ToString(tags.Tags[0].Key) != "Name" {
		t.Fatalf("DescribeTags: %v %+v", err, tags)
	}
	imgs, err := e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{Filters: []types.Filter{{Name: aws.String("tag:env"), Values: []string{"test"}}}})
	if err != nil || len(imgs.Images) != 1 || len(imgs.Images[0].Tags) != 2 {
		t.Fatalf("tag filter: %v %+v", err, imgs)
	}
	if _, err := e.ec2.DeleteTags(ctx, &ec2.DeleteTagsInput{Resources: []string{id}, Tags: []types.Tag{{Key: aws.String("env")}}}); err != nil {
		t.Fatal(err)
	}
	tags, err = e.ec2.DescribeTags(ctx, &ec2.DescribeTagsInput{Filters: []types.Filter{{Name: aws.String("key"), Values: []string{"env"}}}})
	if err != nil || len(tags.Tags) != 1 || aws.ToString(tags.Tags[0].ResourceId) != *sg.GroupId {
		t.Fatalf("after DeleteTags: %v %+v", err, tags)
	}
}

func TestImageAttributesCopyDeregister(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	base := seedDirImage(t, e.srv, "base", "paravirtual")
	// Amazon's AMI is not ours: attributes are not ours to read or change.
	_, err := e.ec2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: aws.String(base), Description: &types.AttributeValue{Value: aws.String("x")}})
	wantCode(t, err, "AuthFailure")
	cp, err := e.ec2.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(base), SourceRegion: aws.String("us-east-1"), Name: aws.String("my-copy"), Description: aws.String("copied")})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(base), SourceRegion: aws.String("us-east-1"), Name: aws.String("my-copy")})
	wantCode(t, err, "InvalidAMIName.Duplicate")
	_, err = e.ec2.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(base), SourceRegion: aws.String("us-west-2"), Name: aws.String("other")})
	wantCode(t, err, "InvalidAMIID.NotFound")
	// A copy into another region is seen from that region only.
	west := ec2Client(e.srv, testCreds, "us-west-2")
	wcp, err := west.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(base), SourceRegion: aws.String("us-east-1"), Name: aws.String("my-copy")})
	if err != nil {
		t.Fatal(err)
	}
	wimgs, err := west.DescribeImages(ctx, &ec2.DescribeImagesInput{Owners: []string{"self"}})
	if err != nil || len(wimgs.Images) != 1 || aws.ToString(wimgs.Images[0].ImageId) != *wcp.ImageId || aws.ToString(wimgs.Images[0].SourceImageRegion) != "us-east-1" {
		t.Fatalf("west images: %v %+v", err, wimgs)
	}
	_, err = e.ec2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: cp.ImageId, LaunchPermission: &types.LaunchPermissionModifications{
		Add: []types.LaunchPermission{{UserId: aws.String("210987654321")}, {Group: types.PermissionGroupAll}}}})
	if err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: cp.ImageId, Attribute: aws.String("launchPermission"), OperationType: types.OperationTypeAdd, UserIds: []string{"1111"}})
	wantCode(t, err, "InvalidAMIAttributeItemValue")
	attr, err := e.ec2.DescribeImageAttribute(ctx, &ec2.DescribeImageAttributeInput{ImageId: cp.ImageId, Attribute: types.ImageAttributeNameLaunchPermission})
	if err != nil || len(attr.LaunchPermissions) != 2 || attr.LaunchPermissions[0].Group != types.PermissionGroupAll || aws.ToString(attr.LaunchPermissions[1].UserId) != "210987654321" {
		t.Fatalf("launchPermission: %v %+v", err, attr)
	}
	if _, err := e.ec2.ModifyImageAttribute(ctx, &ec2.ModifyImageAttributeInput{ImageId: cp.ImageId, Description: &types.AttributeValue{Value: aws.String("new desc")}}); err != nil {
		t.Fatal(err)
	}
	d, err := e.ec2.DescribeImageAttribute(ctx, &ec2.DescribeImageAttributeInput{ImageId: cp.ImageId, Attribute: types.ImageAttributeNameDescription})
	if err != nil || aws.ToString(d.Description.Value) != "new desc" {
		t.Fatalf("description: %v %+v", err, d)
	}
	if _, err := e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: cp.ImageId}); err != nil {
		t.Fatal(err)
	}
	_, err = e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{ImageIds: []string{*cp.ImageId}})
	wantCode(t, err, "InvalidAMIID.NotFound")
	_, err = e.ec2.DeregisterImage(ctx, &ec2.DeregisterImageInput{ImageId: cp.ImageId})
	wantCode(t, err, "InvalidAMIID.NotFound")
	// The name is free again once the AMI is gone.
	if _, err := e.ec2.CopyImage(ctx, &ec2.CopyImageInput{SourceImageId: aws.String(base), SourceRegion: aws.String("us-east-1"), Name: aws.String("my-copy")}); err != nil {
		t.Fatal(err)
	}
}

func TestRegisterImageParameterRules(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	base := seedDirImage(t, e.srv, "base", "paravirtual")
	_ = base
	for _, tc := range []struct {
		name string
		in   ec2.RegisterImageInput
		code string
	}{
		{"bad name", ec2.RegisterImageInput{Name: aws.String("x!"), ImageLocation: aws.String("b/k.manifest.xml")}, "InvalidAMIName.Malformed"},
		{"bad virt", ec2.RegisterImageInput{Name: aws.String("name1"), ImageLocation: aws.String("b/k"), VirtualizationType: aws.String("xen")}, "InvalidParameterValue"},
		{"kernel with hvm", ec2.RegisterImageInput{Name: aws.String("name1"), ImageLocation: aws.String("b/k"), VirtualizationType: aws.String("hvm"), KernelId: aws.String("aki-12345678")}, "InvalidParameterCombination"},
		{"ena with pv", ec2.RegisterImageInput{Name: aws.String("name1"), ImageLocation: aws.String("b/k"), EnaSupport: aws.Bool(true)}, "InvalidParameterCombination"},
		{"bad root device", ec2.RegisterImageInput{Name: aws.String("name1"), ImageLocation: aws.String("b/k"), RootDeviceName: aws.String("/dev/xvdal")}, "InvalidBlockDeviceMapping"},
		{"bad mapping device", ec2.RegisterImageInput{Name: aws.String("name1"), ImageLocation: aws.String("b/k"), BlockDeviceMappings: []types.BlockDeviceMapping{{DeviceName: aws.String("xvdal"), VirtualName: aws.String("ephemeral0")}}}, "InvalidBlockDeviceMapping"},
		{"bad virtual name", ec2.RegisterImageInput{Name: aws.String("name1"), ImageLocation: aws.String("b/k"), BlockDeviceMappings: []types.BlockDeviceMapping{{DeviceName: aws.String("/dev/sdb"), VirtualName: aws.String("ephemeral99")}}}, "InvalidBlockDeviceMapping"},
		{"location not bucket/key", ec2.RegisterImageInput{Name: aws.String("name1"), ImageLocation: aws.String("justabucket")}, "InvalidManifest"},
		{"ebs without snapshot", ec2.RegisterImageInput{Name: aws.String("name1"), RootDeviceName: aws.String("/dev/xvda")}, "MissingParameter"},
		{"no S3 configured", ec2.RegisterImageInput{Name: aws.String("name1"), ImageLocation: aws.String("bucket/img.manifest.xml")}, "Unsupported"},
	} {
		_, err := e.ec2.RegisterImage(ctx, &tc.in)
		t.Run(tc.name, func(t *testing.T) { wantCode(t, err, tc.code) })
	}
}

func TestUnknownActionAndProtocolErrors(t *testing.T) {
	e := startServer(t, Config{})
	ctx := ctxT(t)
	// An action the SDK knows and the simulator does not: InvalidAction, never success.
	_, err := e.ec2.DescribeAddresses(ctx, &ec2.DescribeAddressesInput{})
	wantCode(t, err, "InvalidAction")
	_, err = e.ec2.GetPasswordData(ctx, &ec2.GetPasswordDataInput{InstanceId: aws.String("i-0123456789abcdef0")})
	wantCode(t, err, "InvalidAction")
	_, err = e.ec2.DescribeImages(ctx, &ec2.DescribeImagesInput{DryRun: aws.Bool(true)})
	wantCode(t, err, "DryRunOperation")
	// Unsigned request.
	resp, err := http.Post(e.srv.URL(), "application/x-www-form-urlencoded", strings.NewReader("Action=DescribeRegions&Version=2016-11-15"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("unsigned request: HTTP %d", resp.StatusCode)
	}
}

func TestSTSGetCallerIdentity(t *testing.T) {
	e := startServer(t, Config{AccountID: "210987654321"})
	out, err := e.sts.GetCallerIdentity(ctxT(t), &sts.GetCallerIdentityInput{})
	if err != nil {
		t.Fatal(err)
	}
	if aws.ToString(out.Account) != "210987654321" || !strings.HasPrefix(aws.ToString(out.Arn), "arn:aws:iam::210987654321:") {
		t.Fatalf("identity: %+v", out)
	}
	bad := stsClient(e.srv, Credentials{AccessKeyID: testCreds.AccessKeyID, SecretAccessKey: "wrong"})
	_, err = bad.GetCallerIdentity(ctxT(t), &sts.GetCallerIdentityInput{})
	wantCode(t, err, "SignatureDoesNotMatch")
	unknown := stsClient(e.srv, Credentials{AccessKeyID: "AKIDUNKNOWN", SecretAccessKey: "x"})
	_, err = unknown.GetCallerIdentity(ctxT(t), &sts.GetCallerIdentityInput{})
	wantCode(t, err, "InvalidClientTokenId")
}

func TestEC2CertificateGenerated(t *testing.T) {
	e := startServer(t, Config{})
	b, err := os.ReadFile(e.srv.EC2CertPath())
	if err != nil || !strings.Contains(string(b), "BEGIN CERTIFICATE") {
		t.Fatalf("EC2 cert %s: %v", e.srv.EC2CertPath(), err)
	}
}

package instancestore

import (
	"reflect"
	"testing"

	registryimage "github.com/hashicorp/packer-plugin-sdk/packer/registry/image"
)

func testArtifact() *Artifact {
	return &Artifact{
		Amis:      map[string]string{"us-west-2": "ami-2", "eu-west-1": "ami-1"},
		Manifests: map[string]string{"us-west-2": "bkt/p/image.manifest.xml", "eu-west-1": "copy/image.manifest.xml"},
		StateData: map[string]interface{}{"generated_data": map[string]interface{}{
			"SourceAMI": "ami-src", "SourceAMIName": "base",
		}},
	}
}

func TestArtifactId(t *testing.T) {
	a := testArtifact()
	if got, want := a.Id(), "eu-west-1:ami-1,us-west-2:ami-2"; got != want {
		t.Errorf("Id() = %q, want %q", got, want)
	}
	want := "Instance store-backed AMIs were created:\n" +
		"eu-west-1: ami-1 (manifest s3://copy/image.manifest.xml)\n" +
		"us-west-2: ami-2 (manifest s3://bkt/p/image.manifest.xml)\n"
	if got := a.String(); got != want {
		t.Errorf("String() = %q, want %q", got, want)
	}
	if a.BuilderId() != BuilderId || a.Files() != nil {
		t.Errorf("BuilderId %q Files %v", a.BuilderId(), a.Files())
	}
}

func TestArtifactState(t *testing.T) {
	a := testArtifact()
	if got := a.State("generated_data").(map[string]interface{})["SourceAMI"]; got != "ami-src" {
		t.Errorf("generated_data SourceAMI = %v", got)
	}
	atlas := a.State("atlas.artifact.metadata").(map[string]string)
	if !reflect.DeepEqual(atlas, map[string]string{"region.eu-west-1": "ami-1", "region.us-west-2": "ami-2"}) {
		t.Errorf("atlas metadata = %v", atlas)
	}
	if got := a.State(ArtifactStateManifests).(map[string]string); got["us-west-2"] != "bkt/p/image.manifest.xml" {
		t.Errorf("manifests = %v", got)
	}
	images := a.State(registryimage.ArtifactStateURI).([]*registryimage.Image)
	if len(images) != 2 {
		t.Fatalf("%d HCP images, want 2", len(images))
	}
	img := images[1]
	if img.ImageID != "ami-2" || img.ProviderName != "aws" || img.ProviderRegion != "us-west-2" || img.SourceImageID != "ami-src" ||
		img.Labels["manifest_location"] != "bkt/p/image.manifest.xml" || img.Labels["source_ami_name"] != "base" {
		t.Errorf("HCP image = %+v", img)
	}
	for _, img := range images {
		if err := img.Validate(); err != nil {
			t.Error(err)
		}
	}
	if a.State("nope") != nil {
		t.Error("unknown state key answered")
	}
}

func TestParseImageLocation(t *testing.T) {
	for loc, want := range map[string][3]string{
		"bkt/a/b/image.manifest.xml": {"bkt", "a/b", "image"},
		"bkt/image.manifest.xml":     {"bkt", "", "image"},
	} {
		b, p, n, err := parseImageLocation(loc)
		if err != nil || [3]string{b, p, n} != want {
			t.Errorf("%s: got %q %q %q %v, want %q", loc, b, p, n, err, want)
		}
	}
	for _, bad := range []string{"", "bkt", "/x.manifest.xml", "bkt/image.tar", "bkt/.manifest.xml"} {
		if _, _, _, err := parseImageLocation(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

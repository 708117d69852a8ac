package ec2sim

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"
)

type snapshotXML struct {
	ID          string `xml:"snapshotId"`
	VolumeID    string `xml:"volumeId"`
	Status      string `xml:"status"`
	StartTime   string `xml:"startTime"`
	Progress    string `xml:"progress"`
	OwnerID     string `xml:"ownerId"`
	VolumeSize  int    `xml:"volumeSize"`
	Description string `xml:"description"`
	Encrypted   bool   `xml:"encrypted"`
	StorageTier string `xml:"storageTier"`
	Tags        []tag  `xml:"tagSet>item"`
}

func (c *call) snapshotXML(sn *snapshot) snapshotXML {
	return snapshotXML{ID: sn.id, VolumeID: sn.volumeID, Status: sn.state, StartTime: sn.started.Format(time.RFC3339),
		Progress: strconv.Itoa(sn.progress) + "%", OwnerID: sn.owner, VolumeSize: sn.size,
		Description: sn.description, StorageTier: "standard", Tags: c.s.st.tagsOf(sn.id)}
}

func createSnapshot(c *call) (metaSetter, error) {
	tags, err := c.p.tagSpecs("snapshot")
	if err != nil {
		return nil, err
	}
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	v, err := c.lookupVolume(c.p.get("VolumeId"))
	if err != nil {
		return nil, err
	}
	if v.state != "available" && v.state != "in-use" {
		return nil, apiErr(400, "IncorrectState", "The volume '%s' is '%s'; snapshots are taken of available or in-use volumes", v.id, v.state)
	}
	if err := c.stillWanted(); err != nil {
		return nil, err
	}
	e := c.s.ebs()
	sn := &snapshot{id: newID("snap"), region: c.region, volumeID: v.id, description: c.p.get("Description"),
		state: "pending", owner: st.account, size: v.size, started: time.Now().UTC(), seq: st.next()}
	sn.path = filepath.Join(e.dir, sn.id+".img")
	// The copy is taken now, so later writes to the volume are not in the snapshot.
	if err := copySparse(v.path, sn.path, 0); err != nil {
		return nil, fmt.Errorf("ec2sim: snapshot of %s: %w", v.id, err)
	}
	e.snapshots[sn.id] = sn
	st.setTags(sn.id, tags)
	c.s.later(func() {
		sn.progress = 50
		c.s.later(func() {
			if sn.state == "pending" {
				sn.state, sn.progress = "completed", 100
			}
		})
	})
	return &struct {
		ResponseMeta
		snapshotXML
	}{snapshotXML: c.snapshotXML(sn)}, nil
}

func describeSnapshots(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	ids := c.p.list("SnapshotId")
	for _, id := range ids {
		if _, err := c.lookupSnapshot(id); err != nil {
			return nil, err
		}
	}
	// Without Owner or SnapshotId, the caller's own snapshots; the public ones (the
	// seeded AMIs' roots, owned by amazon) show when asked for by id or owner.
	owners := c.p.list("Owner")
	visible := func(sn *snapshot) bool {
		if len(owners) == 0 {
			return sn.owner == st.account || (len(ids) > 0 && sn.public)
		}
		for _, o := range owners {
			switch {
			case o == "self" && sn.owner == st.account,
				o == "amazon" && sn.owner == amazonOwnerID,
				o == sn.owner && (sn.public || o == st.account):
				return true
			}
		}
		return false
	}
	fields := map[string]fieldFunc[*snapshot]{
		"snapshot-id": func(s *snapshot) []string { return []string{s.id} },
		"volume-id":   func(s *snapshot) []string { return []string{s.volumeID} },
		"status":      func(s *snapshot) []string { return []string{s.state} },
		"progress":    func(s *snapshot) []string { return []string{strconv.Itoa(s.progress) + "%"} },
		"owner-id":    func(s *snapshot) []string { return []string{s.owner} },
		"owner-alias": func(s *snapshot) []string {
			if s.owner == amazonOwnerID {
				return []string{"amazon"}
			}
			return nil
		},
		"description": func(s *snapshot) []string { return []string{s.description} },
		"volume-size": func(s *snapshot) []string { return []string{strconv.Itoa(s.size)} },
		"encrypted":   func(s *snapshot) []string { return []string{"false"} },
	}
	var all []snapshotXML
	for _, sn := range c.s.regionSnapshots(c.region) {
		if (len(ids) > 0 && !contains(ids, sn.id)) || !visible(sn) {
			continue
		}
		ok, err := matchFilters(sn, c.p.filters(), fields, st.tagsOf(sn.id))
		if err != nil {
			return nil, err
		}
		if ok {
			all = append(all, c.snapshotXML(sn))
		}
	}
	start, end, next, err := c.page(len(all))
	if err != nil {
		return nil, err
	}
	return &struct {
		ResponseMeta
		Snapshots []snapshotXML `xml:"snapshotSet>item"`
		NextToken string        `xml:"nextToken,omitempty"`
	}{Snapshots: all[start:end], NextToken: next}, nil
}

// regionSnapshots lists a region's snapshots in creation order. Caller holds mu.
func (s *Server) regionSnapshots(region string) []*snapshot {
	var out []*snapshot
	for _, sn := range s.ebs().snapshots {
		if sn.region == region {
			out = append(out, sn)
		}
	}
	sort.Slice(out, func(a, b int) bool { return out[a].seq < out[b].seq })
	return out
}

func deleteSnapshot(c *call) (metaSetter, error) {
	st := c.s.st
	st.mu.Lock()
	defer st.mu.Unlock()
	sn, err := c.lookupSnapshot(c.p.get("SnapshotId"))
	if err != nil {
		return nil, err
	}
	if sn.owner != st.account {
		return nil, apiErr(403, "UnauthorizedOperation", "You are not authorized to delete snapshot %s: it belongs to account %s", sn.id, sn.owner)
	}
	if im := c.s.snapshotInUse(sn.id); im != "" {
		return nil, apiErr(400, "InvalidSnapshot.InUse", "The snapshot %s is currently in use by %s", sn.id, im)
	}
	if err := os.Remove(sn.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("ec2sim: removing %s's file: %w", sn.id, err)
	}
	sn.state = "deleted"
	delete(c.s.ebs().snapshots, sn.id)
	delete(st.tags, sn.id)
	return &struct {
		ResponseMeta
		Return bool `xml:"return"`
	}{Return: true}, nil
}

package ctrd_test

import (
	"bytes"
	"context"
	"io/fs"
	"testing"

	"meshwork.dev/workspace/compose"
	"meshwork.dev/workspace/image"
)

const seedImage = "meshwork.dev/svcb-seed:1"

// TestServiceVolumeCopy checks that a new volume starts with what the image holds at its
// target (modes and links kept), as with docker, and that an existing one is left as it is.
func TestServiceVolumeCopy(t *testing.T) {
	e := newSvcEnv(t)
	files, err := image.Busybox()
	if err != nil {
		t.Fatal(err)
	}
	files = append(files,
		image.File{Path: "/data", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
		image.File{Path: "/data/seed", Mode: 0o604, Data: []byte("from the image\n")},
		image.File{Path: "/data/sub", Mode: fs.ModeDir | 0o750},
		image.File{Path: "/data/link", Link: "seed"},
	)
	var buf bytes.Buffer
	if err := image.Build(&buf, seedImage, files, image.Config{Cmd: []string{"sleep", "1000"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := e.rt.Import(e.ctx(), &buf); err != nil {
		t.Fatal(err)
	}
	s := svcSpec("cache", 60)
	s.Service.Image = seedImage
	s.Service.User = "nobody"
	s.Service.Volumes = []compose.Mount{{Volume: "data", Target: "/data"}}
	e.run(s)
	want := "1777 604 750\nfrom the image\nseed"
	if got := e.sh(s.ID, "stat -c %a /data /data/seed /data/sub | xargs; cat /data/seed; readlink /data/link"); got != want {
		t.Errorf("new volume: %q, want %q", got, want)
	}
	e.sh(s.ID, "echo mine > /data/new")

	s.Hash = "h2" // recreated: the volume is not new, nothing is copied over it
	e.run(s)
	if got := e.sh(s.ID, "cat /data/new"); got != "mine" {
		t.Errorf("after recreation: %q, want the volume as it was", got)
	}
	if err := e.host.Do(func() error { return e.rt.DeleteService(context.Background(), s.ID) }); err != nil {
		t.Fatal(err)
	}
	if err := e.rt.DeleteVolumes(e.ctx(), s.EnvID); err != nil {
		t.Fatal(err)
	}
	e.run(s)
	if got := e.sh(s.ID, "ls /data | xargs"); got != "link seed sub" {
		t.Errorf("after DeleteVolumes: %q, want the image's files only", got)
	}
}

package demo

import (
	"bytes"
	"context"
	"image"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestStatusPageRendersInChromium opens the status page in headless
// Chromium (Debian's chromium package; `make test` installs it) and checks
// the screenshot: the ring and the nodes on it are drawn, in the page's
// colours, where the page puts them.
func TestStatusPageRendersInChromium(t *testing.T) {
	browser, err := exec.LookPath("chromium")
	if err != nil {
		t.Fatalf("chromium is needed for this test (make tools installs it): %v", err)
	}
	cfg := DefaultConfig()
	cfg.Nodes = 4
	c, err := Start(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	if err := c.WaitReady(t.Context(), 60*time.Second); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	shot := filepath.Join(dir, "status.png")
	ctx, cancel := context.WithTimeout(t.Context(), 90*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
		"--user-data-dir="+filepath.Join(dir, "profile"), "--window-size=1200,900", "--screenshot="+shot, c.StatusURL())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("chromium: %v\n%s", err, out)
	}
	b, err := os.ReadFile(shot)
	if err != nil {
		t.Fatal(err)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds().Size(); got != image.Pt(1200, 900) {
		t.Fatalf("screenshot is %v, want 1200x900", got)
	}
	// The page's colours: the ring's grey stroke (#bbb) and the active
	// nodes' green (#2e9e4f).
	var ring, green int
	bnd := img.Bounds()
	for y := bnd.Min.Y; y < bnd.Max.Y; y++ {
		for x := bnd.Min.X; x < bnd.Max.X; x++ {
			r, g, b, _ := img.At(x, y).RGBA()
			r, g, b = r>>8, g>>8, b>>8
			switch {
			case near(r, 0xbb) && near(g, 0xbb) && near(b, 0xbb):
				ring++
			case near(r, 0x2e) && near(g, 0x9e) && near(b, 0x4f):
				green++
			}
		}
	}
	if ring < 500 {
		t.Errorf("the ring is not drawn: %d pixels of its grey", ring)
	}
	if green < 4*50 {
		t.Errorf("the 4 active nodes are not drawn: %d green pixels", green)
	}
	t.Logf("screenshot: %d ring pixels, %d node pixels", ring, green)
}

func near(v, want uint32) bool { return v+8 >= want && v <= want+8 }

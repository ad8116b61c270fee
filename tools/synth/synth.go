package synth

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"sync"
)

// Options say what to generate.
type Options struct {
	Out           string // dataset folder
	Train, Test   int    // pictures per split
	Seed          uint64
	Height, Width int // picture size; 0 means 480×640
	Workers       int // parallel renderers; 0 means GOMAXPROCS
}

// Default picture size, the network's input.
const (
	DefaultHeight = 480
	DefaultWidth  = 640
)

// sampleSeed derives the seed of one picture from the dataset seed, its split and index, so a
// picture does not depend on how many others are generated or in which order.
func sampleSeed(seed uint64, split string, index int) uint64 {
	h := uint64(0xcbf29ce484222325)
	for _, b := range []byte(split) {
		h = (h ^ uint64(b)) * 0x100000001b3
	}
	return rand.New(rand.NewPCG(seed^h, uint64(index))).Uint64()
}

// Name is the base name of picture index in a split.
func Name(split string, index int) string { return fmt.Sprintf("synth_%s_%06d", split, index) }

// Generate writes opts.Train and opts.Test pictures with their masks under opts.Out, in parallel.
// progress, if not nil, is called after each picture with the number done and the total.
func Generate(ctx context.Context, opts Options, progress func(done, total int)) error {
	if opts.Height == 0 {
		opts.Height = DefaultHeight
	}
	if opts.Width == 0 {
		opts.Width = DefaultWidth
	}
	switch {
	case opts.Out == "":
		return errors.New("synth: no output folder")
	case opts.Train < 0 || opts.Test < 0 || opts.Train+opts.Test == 0:
		return fmt.Errorf("synth: %d train and %d test pictures", opts.Train, opts.Test)
	case opts.Height < 32 || opts.Width < 32 || opts.Height > 8192 || opts.Width > 8192:
		return fmt.Errorf("synth: picture size %d×%d, want 32..8192 each side", opts.Height, opts.Width)
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	type job struct {
		split string
		index int
	}
	var jobs []job
	for _, sp := range []struct {
		name string
		n    int
	}{{"train", opts.Train}, {"test", opts.Test}} {
		for _, kind := range []string{"image", "mask"} {
			if err := os.MkdirAll(filepath.Join(opts.Out, sp.name, kind), 0o755); err != nil {
				return fmt.Errorf("synth: %w", err)
			}
		}
		for i := 0; i < sp.n; i++ {
			jobs = append(jobs, job{sp.name, i})
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	next := make(chan job)
	var (
		mu    sync.Mutex
		first error
		done  int
		wg    sync.WaitGroup
	)
	for range min(workers, len(jobs)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range next {
				err := writeSample(opts, j.split, j.index)
				mu.Lock()
				if err != nil && first == nil {
					first = err
					cancel()
				}
				done++
				if progress != nil && err == nil {
					progress(done, len(jobs))
				}
				mu.Unlock()
			}
		}()
	}
feed:
	for _, j := range jobs {
		select {
		case next <- j:
		case <-ctx.Done():
			break feed
		}
	}
	close(next)
	wg.Wait()
	if first != nil {
		return first
	}
	if err := ctx.Err(); err != nil && done < len(jobs) {
		return fmt.Errorf("synth: %w", err)
	}
	return nil
}

// writeSample renders one picture and writes its JPEG and mask PNG.
func writeSample(opts Options, split string, index int) error {
	seed := sampleSeed(opts.Seed, split, index)
	img, labels := Render(seed, opts.Width, opts.Height)
	mask := image.NewGray(image.Rect(0, 0, opts.Width, opts.Height))
	for i, v := range labels {
		mask.Pix[i] = 255 * v
	}
	// JPEG quality varies like phone and messenger pictures do; it is drawn from the seed too.
	quality := 55 + int(rand.New(rand.NewPCG(seed, 0x6a706567)).IntN(41))
	name := Name(split, index)
	if err := writeFile(filepath.Join(opts.Out, split, "image", name+".jpg"), func(f *bufio.Writer) error {
		return jpeg.Encode(f, img, &jpeg.Options{Quality: quality})
	}); err != nil {
		return err
	}
	enc := png.Encoder{CompressionLevel: png.BestSpeed}
	return writeFile(filepath.Join(opts.Out, split, "mask", name+".png"), func(f *bufio.Writer) error {
		return enc.Encode(f, mask)
	})
}

// writeFile writes through a temporary file and renames it, so an interrupted run leaves no
// truncated picture behind.
func writeFile(path string, write func(*bufio.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return fmt.Errorf("synth: %w", err)
	}
	bw := bufio.NewWriter(f)
	err = write(bw)
	if err == nil {
		err = bw.Flush()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("synth: write %s: %w", path, err)
	}
	return nil
}

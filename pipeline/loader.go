package pipeline

import (
	"context"
	"errors"
	"fmt"
	"image"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/cardseg-ort/cardseg-ort/augment"
)

// The network's input normalisation is the one ImageNet (eval_model.go) states: RGB scaled to
// [0,1] (its Scale is 1/255), then ImageNet's mean and standard deviation.
var imageNetMean, imageNetStd = func() (mean, std [3]float32) {
	for c := range mean {
		mean[c], std[c] = float32(ImageNet.Mean[c]), float32(ImageNet.Std[c])
	}
	return mean, std
}()

// LoaderConfig configures a Loader.
type LoaderConfig struct {
	Height, Width int // output size of every sample
	BatchSize     int
	// Workers decode and augment in parallel; 0 means GOMAXPROCS.
	Workers int
	// Prefetch is how many batches are prepared ahead of the consumer; 0 means 2.
	Prefetch int
	// Shuffle draws a new sample order each epoch from Seed and the epoch number.
	Shuffle bool
	// DropLast leaves out a final batch smaller than BatchSize.
	DropLast bool
	// Augment is the augmentation; nil only resizes (evaluation).
	Augment *augment.Config
	// Seed fixes the order and the augmentations: the same Seed and epoch give the same batches,
	// whatever the number of workers.
	Seed uint64
}

// Batch is one batch of samples, laid out for the network.
type Batch struct {
	Index         int // position in the epoch
	Size          int // number of samples N
	Height, Width int
	// Images is [N,3,H,W]: RGB scaled to [0,1], normalised with ImageNet's mean and std.
	Images []float32
	// Targets is [N,H,W]: 0 background, 1 card.
	Targets []int64
	// Samples are the pairs in batch order.
	Samples []Sample
}

// batchBuf is a Batch being filled by the workers.
type batchBuf struct {
	Batch
	pending atomic.Int32  // samples not yet written
	done    chan struct{} // closed when pending reaches 0
}

// Loader turns samples into batches with a pool of workers.
type Loader struct {
	samples []Sample
	cfg     LoaderConfig

	mu      sync.Mutex
	free    []*batchBuf // batch buffers for reuse
	workers []*worker   // worker scratch for reuse
}

// NewLoader checks cfg and returns a loader over samples.
func NewLoader(samples []Sample, cfg LoaderConfig) (*Loader, error) {
	switch {
	case len(samples) == 0:
		return nil, errors.New("loader: no samples")
	case cfg.Height <= 0 || cfg.Width <= 0:
		return nil, fmt.Errorf("loader: output size %d×%d", cfg.Height, cfg.Width)
	case cfg.BatchSize <= 0:
		return nil, fmt.Errorf("loader: batch size %d", cfg.BatchSize)
	case cfg.Workers < 0 || cfg.Prefetch < 0:
		return nil, fmt.Errorf("loader: %d workers, prefetch %d", cfg.Workers, cfg.Prefetch)
	}
	if cfg.Augment != nil {
		if err := cfg.Augment.Validate(); err != nil {
			return nil, fmt.Errorf("loader: %w", err)
		}
		c := *cfg.Augment
		cfg.Augment = &c
	}
	if cfg.Workers == 0 {
		cfg.Workers = runtime.GOMAXPROCS(0)
	}
	if cfg.Prefetch == 0 {
		cfg.Prefetch = 2
	}
	return &Loader{samples: samples, cfg: cfg}, nil
}

// Batches is the number of batches in an epoch.
func (l *Loader) Batches() int {
	n, b := len(l.samples), l.cfg.BatchSize
	if l.cfg.DropLast {
		return n / b
	}
	return (n + b - 1) / b
}

// Order returns the sample indices of an epoch, in batch order.
func (l *Loader) Order(epoch int) []int {
	n := len(l.samples)
	if !l.cfg.Shuffle {
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		return order
	}
	return rand.New(rand.NewPCG(l.cfg.Seed, mix(uint64(epoch), 0x6f72646572))).Perm(n) // "order"
}

// mix hashes two words into one (splitmix64 finaliser), to derive independent seeds.
func mix(a, b uint64) uint64 {
	z := a*0x9e3779b97f4a7c15 ^ b
	z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
	z = (z ^ z>>27) * 0x94d049bb133111eb
	return z ^ z>>31
}

// Epoch is one pass over the samples. Call Next until it returns false, then Err; always Close.
type Epoch struct {
	l      *Loader
	parent context.Context
	ctx    context.Context
	cancel context.CancelFunc
	ready  chan *batchBuf // batches in order, as soon as their jobs are queued
	wg     sync.WaitGroup
	cur    *batchBuf

	mu        sync.Mutex
	err       error // first sample that failed to load
	exhausted bool  // Next saw every batch
	closeOnce sync.Once
}

type job struct {
	batch *batchBuf
	slot  int
	index int // into Loader.samples
}

// Epoch starts the workers for one epoch. The batches are the same for the same Seed and epoch.
func (l *Loader) Epoch(ctx context.Context, epoch int) *Epoch {
	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	e := &Epoch{l: l, parent: parent, ctx: ctx, cancel: cancel, ready: make(chan *batchBuf, l.cfg.Prefetch)}
	order := l.Order(epoch)
	nb := l.Batches()
	order = order[:min(len(order), nb*l.cfg.BatchSize)]
	jobs := make(chan job, l.cfg.BatchSize)
	augSeed := mix(l.cfg.Seed, uint64(epoch))

	e.wg.Add(1)
	go func() { // producer: hands out batches in order, then their jobs
		defer e.wg.Done()
		defer close(jobs)
		defer close(e.ready)
		for b := 0; b < nb; b++ {
			idx := order[b*l.cfg.BatchSize : min(len(order), (b+1)*l.cfg.BatchSize)]
			batch := l.getBatch(b, len(idx))
			for i, k := range idx {
				batch.Samples[i] = l.samples[k]
			}
			select {
			case e.ready <- batch:
			case <-ctx.Done():
				return
			}
			for i, k := range idx {
				select {
				case jobs <- job{batch: batch, slot: i, index: k}:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	for range l.cfg.Workers {
		w := l.getWorker()
		e.wg.Add(1)
		go func() {
			defer e.wg.Done()
			defer l.putWorker(w)
			for j := range jobs {
				if ctx.Err() == nil {
					if err := w.load(l, j, augSeed); err != nil {
						e.fail(err)
					}
				}
				if j.batch.pending.Add(-1) == 0 {
					close(j.batch.done)
				}
			}
		}()
	}
	return e
}

// fail records the first error and stops the epoch.
func (e *Epoch) fail(err error) {
	e.mu.Lock()
	if e.err == nil {
		e.err = err
	}
	e.mu.Unlock()
	e.cancel()
}

// Next waits for the next batch; it returns false at the end of the epoch, on error and on
// cancellation. The previous batch's slices are reused: copy what must outlive this call.
func (e *Epoch) Next() bool {
	if e.cur != nil {
		e.l.putBatch(e.cur)
		e.cur = nil
	}
	var b *batchBuf
	select {
	case next, ok := <-e.ready:
		if !ok {
			e.mu.Lock()
			e.exhausted = true
			e.mu.Unlock()
			return false
		}
		b = next
	case <-e.ctx.Done():
		return false
	}
	select {
	case <-b.done:
	case <-e.ctx.Done():
		return false
	}
	if e.ctx.Err() != nil { // a sample of this batch failed
		return false
	}
	e.cur = b
	return true
}

// Batch is the batch Next made ready; it stays valid until the next call to Next or Close.
func (e *Epoch) Batch() *Batch {
	if e.cur == nil {
		return nil
	}
	return &e.cur.Batch
}

// Err is what ended the epoch early: a sample that failed to load (the error names its files)
// or the cancellation of the context given to Loader.Epoch. It is nil after a complete epoch.
func (e *Epoch) Err() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.err != nil {
		return e.err
	}
	if !e.exhausted {
		return e.parent.Err()
	}
	return nil
}

// Close stops the workers and waits until every goroutine of the epoch has returned. It returns
// the error of a sample that failed to load, if any; it is safe to call more than once.
func (e *Epoch) Close() error {
	e.closeOnce.Do(func() {
		e.cancel()
		e.wg.Wait()
		if e.cur != nil {
			e.l.putBatch(e.cur)
			e.cur = nil
		}
	})
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.err
}

func (l *Loader) getBatch(index, n int) *batchBuf {
	h, w := l.cfg.Height, l.cfg.Width
	l.mu.Lock()
	var b *batchBuf
	if k := len(l.free); k > 0 {
		b, l.free = l.free[k-1], l.free[:k-1]
	}
	l.mu.Unlock()
	if b == nil {
		bs := l.cfg.BatchSize
		b = &batchBuf{Batch: Batch{Images: make([]float32, bs*3*h*w), Targets: make([]int64, bs*h*w), Samples: make([]Sample, bs)}}
	}
	b.Index, b.Size, b.Height, b.Width = index, n, h, w
	b.Images, b.Targets, b.Samples = b.Images[:n*3*h*w], b.Targets[:n*h*w], b.Samples[:n]
	b.pending.Store(int32(n))
	b.done = make(chan struct{})
	return b
}

func (l *Loader) putBatch(b *batchBuf) {
	l.mu.Lock()
	if len(l.free) < l.cfg.Prefetch+2 {
		l.free = append(l.free, b)
	}
	l.mu.Unlock()
}

func (l *Loader) getWorker() *worker {
	l.mu.Lock()
	defer l.mu.Unlock()
	if k := len(l.workers); k > 0 {
		w := l.workers[k-1]
		l.workers = l.workers[:k-1]
		return w
	}
	h, wd := l.cfg.Height, l.cfg.Width
	return &worker{outMask: augment.NewMask(wd, h)}
}

func (l *Loader) putWorker(w *worker) {
	l.mu.Lock()
	l.workers = append(l.workers, w)
	l.mu.Unlock()
}

// worker holds one goroutine's buffers: file bytes, decoded image and mask, augmented mask.
type worker struct {
	aug     augment.Augmenter
	dec     augment.Decoder
	file    []byte
	img     *image.RGBA
	mask    *augment.Mask
	outMask *augment.Mask
}

// load reads, decodes, augments and normalises one sample into its batch slot. A panic (a bug,
// never expected) becomes the epoch's error, naming the file, instead of ending the process.
func (w *worker) load(l *Loader, j job, augSeed uint64) (err error) {
	s := l.samples[j.index]
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("load %s: internal error: %v", s.Image, r)
		}
	}()
	if w.file, err = readFile(s.Image, w.file); err != nil {
		return fmt.Errorf("load %s: %w", s.Image, err)
	}
	if w.img, _, err = w.dec.Image(w.file, w.img); err != nil {
		return fmt.Errorf("load %s: %w", s.Image, err)
	}
	if w.file, err = readFile(s.Mask, w.file); err != nil {
		return fmt.Errorf("load %s: %w", s.Mask, err)
	}
	if w.mask, _, err = w.dec.Mask(w.file, w.mask); err != nil {
		return fmt.Errorf("load %s: %w", s.Mask, err)
	}
	if w.img.Rect.Dx() != w.mask.Width || w.img.Rect.Dy() != w.mask.Height {
		return fmt.Errorf("load %s: image is %d×%d but mask %s is %d×%d", s.Image,
			w.img.Rect.Dx(), w.img.Rect.Dy(), s.Mask, w.mask.Width, w.mask.Height)
	}
	p := augment.Identity()
	if l.cfg.Augment != nil {
		p = l.cfg.Augment.Sample(rand.New(rand.NewPCG(augSeed, uint64(j.index))))
	}
	b := j.batch
	hw := b.Height * b.Width
	if err := w.aug.ApplyPlanar(p, w.img, w.mask, b.Images[j.slot*3*hw:(j.slot+1)*3*hw], w.outMask, imageNetMean, imageNetStd); err != nil {
		return fmt.Errorf("load %s: %w", s.Image, err)
	}
	t := b.Targets[j.slot*hw : (j.slot+1)*hw]
	for i, v := range w.outMask.Pix[:hw] {
		t[i] = int64(v)
	}
	return nil
}

// readFile reads path into buf, growing it when needed.
func readFile(path string, buf []byte) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return buf, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return buf, err
	}
	n := int(st.Size())
	if cap(buf) < n+1 {
		buf = make([]byte, n+1, n+n/4+1)
	}
	buf = buf[:n+1]
	m, err := io.ReadFull(f, buf)
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		err = nil // shorter than Stat said, or exactly n bytes (the +1 probes for growth)
	}
	if err != nil {
		return buf, err
	}
	if m == n+1 { // the file grew since Stat: read the rest
		rest, err := io.ReadAll(f)
		if err != nil {
			return buf, err
		}
		return append(buf[:m], rest...), nil
	}
	return buf[:m], nil
}

package pipeline

import (
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/rs/zerolog"
)

// IsTerminal reports whether f is a character device (an interactive terminal).
func IsTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

// BarProgress redraws one status line on a terminal:
// epoch 3/30 [#######.......]  40/80  loss 0.2345  12.3 img/s  ETA 5m10s
type BarProgress struct {
	W     io.Writer
	last  time.Time
	width int
}

func (p *BarProgress) Step(epoch, epochs, batch, batches int, loss, imgPerS float64, eta time.Duration) {
	if time.Since(p.last) < 200*time.Millisecond && batch != batches {
		return
	}
	p.last = time.Now()
	const barWidth = 24
	filled := barWidth * batch / batches
	bar := strings.Repeat("#", filled) + strings.Repeat(".", barWidth-filled)
	line := fmt.Sprintf("epoch %d/%d [%s] %d/%d  loss %.4f  %.1f img/s  ETA %s", epoch, epochs, bar, batch, batches, loss, imgPerS, eta.Round(time.Second))
	pad := ""
	if n := p.width - len(line); n > 0 {
		pad = strings.Repeat(" ", n)
	}
	p.width = len(line)
	fmt.Fprintf(p.W, "\r%s%s", line, pad)
}

func (p *BarProgress) EpochDone() {
	if p.width > 0 {
		fmt.Fprint(p.W, "\r"+strings.Repeat(" ", p.width)+"\r")
		p.width = 0
	}
}

// LineProgress logs a plain progress line every Every (for logs and pipes).
type LineProgress struct {
	Log   zerolog.Logger
	Every time.Duration
	last  time.Time
}

func (p *LineProgress) Step(epoch, epochs, batch, batches int, loss, imgPerS float64, eta time.Duration) {
	if p.last.IsZero() {
		p.last = time.Now()
		return
	}
	if time.Since(p.last) < p.Every {
		return
	}
	p.last = time.Now()
	p.Log.Info().Int("epoch", epoch).Int("epochs", epochs).Int("batch", batch).Int("batches", batches).
		Float64("loss", round4(loss)).Float64("img_per_s", float64(int(imgPerS*10))/10).Str("eta", eta.Round(time.Second).String()).Msg("training")
}

func (p *LineProgress) EpochDone() {}

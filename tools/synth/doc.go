// Package synth generates the built-in synthetic dataset: procedural photographs of trading
// cards on tables, with exact masks, written in the dataset layout (DIR/{train,test}/image/*.jpg,
// DIR/{train,test}/mask/*.png, 255 card, 0 background). Nothing is downloaded; every picture comes
// from code and a seed.
//
// A picture is a table plane seen by a tilted, rolled camera: a background (wood, fabric,
// playmat, desk or cutting mat, felt, stone, noise; sometimes a playmat edge), non-card objects
// lying under the cards (paper notes, empty sleeves, deck boxes, phones, booster wrappers),
// 0–4 cards (63:88, rounded corners, black/white/silver/coloured borders, art, text bars,
// symbols; backs too) scattered, in rows, fanned or stacked, some cut by the frame, lifted or
// sleeved, each with a soft shadow, then objects over the cards (coins, dice, beads, pens,
// hands), uneven lighting and glare, then the camera's blur, sensor noise and JPEG compression.
// The mask is the set of pixels whose centre lies on a visible card.
//
// It may import the project's leaf packages (augment), github.com/anthonynsimon/bild and the
// standard library.
package synth

module github.com/cardseg-ort/cardseg-ort

go 1.26.8

require (
	github.com/alecthomas/kong v1.17.0
	github.com/anthonynsimon/bild v0.14.0
	github.com/rs/zerolog v1.35.1
	github.com/yalue/onnxruntime_go v1.27.0
	google.golang.org/protobuf v1.36.12
)

require (
	github.com/mattn/go-colorable v0.1.14 // indirect
	github.com/mattn/go-isatty v0.0.20 // indirect
	golang.org/x/sys v0.29.0 // indirect
)

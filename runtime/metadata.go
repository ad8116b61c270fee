package runtime

import (
	"fmt"
	"sort"
)

// Metadata returns the model's custom metadata (ONNX metadata_props) as a map; a model
// without any returns an empty map.
func (s *Session) Metadata() (map[string]string, error) {
	if s.sess == nil {
		return nil, fmt.Errorf("metadata of %s: session closed", s.name)
	}
	md, err := s.sess.GetModelMetadata()
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", s.name, err)
	}
	defer md.Destroy()
	keys, err := md.GetCustomMetadataMapKeys()
	if err != nil {
		return nil, fmt.Errorf("metadata of %s: %w", s.name, err)
	}
	sort.Strings(keys)
	out := make(map[string]string, len(keys))
	for _, k := range keys {
		v, ok, err := md.LookupCustomMetadataMap(k)
		if err != nil {
			return nil, fmt.Errorf("metadata of %s: key %q: %w", s.name, k, err)
		}
		if ok {
			out[k] = v
		}
	}
	return out, nil
}

package kube

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"google.golang.org/protobuf/encoding/protowire"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// The list decoder reads a page of Nodes straight from the response body
// into Nodes that hold only what the store reads (metadata.name,
// metadata.annotations, spec.podCIDR and spec.podCIDRs). A kubelet's Node
// is ~6 KB of protobuf, most of it status (images, conditions) and
// managedFields; decoding all of it into full objects cost a 5,000-Node list
// ~170 MiB of allocation and most of its CPU. Here one Node's bytes are held
// at a time and the rest is skipped.

// pbMagic starts every protobuf body of the API server: "k8s" and a zero.
var pbMagic = [4]byte{'k', '8', 's', 0}

// maxNodeBytes bounds one Node in a list: etcd refuses values over 1.5 MiB,
// so a larger one means a corrupt stream.
const maxNodeBytes = 8 << 20

// Field numbers of the messages the decoder reads (k8s.io/api and
// k8s.io/apimachinery generated.proto).
const (
	fUnknownRaw        = 2 // runtime.Unknown.raw
	fListMeta          = 1 // NodeList.metadata
	fListItems         = 2 // NodeList.items
	fListMetaRV        = 2 // ListMeta.resourceVersion
	fListMetaContinue  = 3 // ListMeta.continue
	fNodeMeta          = 1 // Node.metadata
	fNodeSpec          = 2 // Node.spec
	fMetaName          = 1 // ObjectMeta.name
	fMetaRV            = 6 // ObjectMeta.resourceVersion
	fMetaAnnotations   = 12
	fSpecPodCIDR       = 1 // NodeSpec.podCIDR
	fSpecPodCIDRs      = 7 // NodeSpec.podCIDRs
	fMapKey, fMapValue = 1, 2
)

// decodeNodeList reads a NodeList body (the API server's protobuf encoding,
// or JSON when the server answered in JSON), calls each with every Node as
// it is decoded, and returns the list's metadata. The Nodes hold only name,
// resourceVersion, annotations and podCIDRs; each must not keep the Node
// itself (its fields it may).
func decodeNodeList(r io.Reader, each func(*corev1.Node)) (metav1.ListMeta, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	head, err := br.Peek(len(pbMagic))
	if err != nil && !(errors.Is(err, io.EOF) && len(head) > 0) {
		return metav1.ListMeta{}, fmt.Errorf("read node list: %w", err)
	}
	if !bytes.Equal(head, pbMagic[:]) {
		return decodeNodeListJSON(br, each)
	}
	if _, err := br.Discard(len(pbMagic)); err != nil {
		return metav1.ListMeta{}, fmt.Errorf("read node list: %w", err)
	}
	d := &listDecoder{r: br, each: each}
	meta, err := d.envelope()
	if err != nil {
		return metav1.ListMeta{}, fmt.Errorf("decode node list (protobuf, at byte %d, after %d nodes): %w",
			d.off+len(pbMagic), d.nodes, err)
	}
	return meta, nil
}

// decodeNodeListJSON decodes a JSON NodeList: whole, as a server that
// answers JSON to a protobuf request is not the common case.
func decodeNodeListJSON(r io.Reader, each func(*corev1.Node)) (metav1.ListMeta, error) {
	var list corev1.NodeList
	if err := json.NewDecoder(r).Decode(&list); err != nil {
		return metav1.ListMeta{}, fmt.Errorf("decode node list (json): %w", err)
	}
	for i := range list.Items {
		each(&list.Items[i])
	}
	return list.ListMeta, nil
}

// listDecoder reads the envelope and the list from a stream; off counts the
// bytes consumed, for error messages.
type listDecoder struct {
	r     *bufio.Reader
	each  func(*corev1.Node)
	off   int
	nodes int    // Nodes decoded
	buf   []byte // one Node's bytes, reused
}

func (d *listDecoder) uvarint() (uint64, error) {
	var v uint64
	for i := 0; i < binary64Len; i++ {
		b, err := d.r.ReadByte()
		if err != nil {
			return 0, unexpectedEOF(err)
		}
		d.off++
		v |= uint64(b&0x7f) << (7 * i)
		if b < 0x80 {
			return v, nil
		}
	}
	return 0, errors.New("varint overflows 64 bits")
}

// binary64Len is the longest varint.
const binary64Len = 10

func unexpectedEOF(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// tag reads a field's tag; io.EOF at a clean end of the stream.
func (d *listDecoder) tag() (protowire.Number, protowire.Type, error) {
	if _, err := d.r.Peek(1); err != nil {
		return 0, 0, err
	}
	v, err := d.uvarint()
	if err != nil {
		return 0, 0, err
	}
	num, typ := protowire.DecodeTag(v)
	if num < protowire.MinValidNumber {
		return 0, 0, fmt.Errorf("invalid field number %d", num)
	}
	return num, typ, nil
}

// skip discards the value of a field of type typ.
func (d *listDecoder) skip(typ protowire.Type) error {
	var n uint64
	switch typ {
	case protowire.VarintType:
		_, err := d.uvarint()
		return err
	case protowire.Fixed32Type:
		n = 4
	case protowire.Fixed64Type:
		n = 8
	case protowire.BytesType:
		var err error
		if n, err = d.uvarint(); err != nil {
			return err
		}
	default:
		return fmt.Errorf("unsupported wire type %d", typ)
	}
	return d.discard(n)
}

func (d *listDecoder) discard(n uint64) error {
	if n > 1<<40 {
		return fmt.Errorf("field length %d is out of range", n)
	}
	got, err := d.r.Discard(int(n))
	d.off += got
	return unexpectedEOF(err)
}

// bytes reads a length-delimited value of at most limit bytes into d.buf.
func (d *listDecoder) bytes(limit uint64) ([]byte, error) {
	n, err := d.uvarint()
	if err != nil {
		return nil, err
	}
	if n > limit {
		return nil, fmt.Errorf("a field of %d bytes is over the %d allowed", n, limit)
	}
	if uint64(cap(d.buf)) < n {
		d.buf = make([]byte, n)
	}
	b := d.buf[:n]
	got, err := io.ReadFull(d.r, b)
	d.off += got
	return b, unexpectedEOF(err)
}

// envelope reads runtime.Unknown and decodes its raw field as the list.
func (d *listDecoder) envelope() (metav1.ListMeta, error) {
	var meta metav1.ListMeta
	seen := false
	for {
		num, typ, err := d.tag()
		if errors.Is(err, io.EOF) {
			if !seen {
				return meta, errors.New("no list in the response")
			}
			return meta, nil
		}
		if err != nil {
			return meta, err
		}
		if num != fUnknownRaw || typ != protowire.BytesType || seen {
			if err := d.skip(typ); err != nil {
				return meta, err
			}
			continue
		}
		n, err := d.uvarint()
		if err != nil {
			return meta, err
		}
		if n > 1<<40 {
			return meta, fmt.Errorf("list length %d is out of range", n)
		}
		if meta, err = d.list(d.off + int(n)); err != nil {
			return meta, err
		}
		seen = true
	}
}

// list reads NodeList fields up to byte offset end.
func (d *listDecoder) list(end int) (metav1.ListMeta, error) {
	var meta metav1.ListMeta
	var n corev1.Node
	for d.off < end {
		num, typ, err := d.tag()
		if err != nil {
			return meta, unexpectedEOF(err)
		}
		switch {
		case num == fListMeta && typ == protowire.BytesType:
			b, err := d.bytes(maxNodeBytes)
			if err != nil {
				return meta, err
			}
			if err := decodeListMeta(b, &meta); err != nil {
				return meta, fmt.Errorf("list metadata: %w", err)
			}
		case num == fListItems && typ == protowire.BytesType:
			b, err := d.bytes(maxNodeBytes)
			if err != nil {
				return meta, fmt.Errorf("node %d: %w", d.nodes, err)
			}
			n = corev1.Node{}
			if err := decodeNode(b, &n); err != nil {
				return meta, fmt.Errorf("node %d: %w", d.nodes, err)
			}
			d.nodes++
			d.each(&n)
		default:
			if err := d.skip(typ); err != nil {
				return meta, err
			}
		}
	}
	if d.off != end {
		return meta, errors.New("a field runs past the end of the list")
	}
	return meta, nil
}

// eachField calls f for each field of message b; f gets the value of a
// length-delimited field (nil for other types, which it may ignore).
func eachField(b []byte, f func(num protowire.Number, typ protowire.Type, v []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		var v []byte
		if typ == protowire.BytesType {
			v, n = protowire.ConsumeBytes(b)
		} else {
			n = protowire.ConsumeFieldValue(num, typ, b)
		}
		if n < 0 {
			return protowire.ParseError(n)
		}
		b = b[n:]
		if err := f(num, typ, v); err != nil {
			return err
		}
	}
	return nil
}

func decodeListMeta(b []byte, meta *metav1.ListMeta) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch {
		case typ != protowire.BytesType:
		case num == fListMetaRV:
			meta.ResourceVersion = string(v)
		case num == fListMetaContinue:
			meta.Continue = string(v)
		}
		return nil
	})
}

// decodeNode fills n's name, resourceVersion, annotations and podCIDRs.
func decodeNode(b []byte, n *corev1.Node) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch {
		case typ != protowire.BytesType:
		case num == fNodeMeta:
			return decodeMeta(v, n)
		case num == fNodeSpec:
			return decodeSpec(v, n)
		}
		return nil
	})
}

func decodeMeta(b []byte, n *corev1.Node) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch {
		case typ != protowire.BytesType:
		case num == fMetaName:
			n.Name = string(v)
		case num == fMetaRV:
			n.ResourceVersion = string(v)
		case num == fMetaAnnotations:
			var key, val string
			err := eachField(v, func(num protowire.Number, typ protowire.Type, v []byte) error {
				switch {
				case typ != protowire.BytesType:
				case num == fMapKey:
					key = string(v)
				case num == fMapValue:
					val = string(v)
				}
				return nil
			})
			if err != nil {
				return fmt.Errorf("annotation: %w", err)
			}
			if n.Annotations == nil {
				n.Annotations = make(map[string]string, 16)
			}
			n.Annotations[key] = val
		}
		return nil
	})
}

func decodeSpec(b []byte, n *corev1.Node) error {
	return eachField(b, func(num protowire.Number, typ protowire.Type, v []byte) error {
		switch {
		case typ != protowire.BytesType:
		case num == fSpecPodCIDR:
			n.Spec.PodCIDR = string(v)
		case num == fSpecPodCIDRs:
			n.Spec.PodCIDRs = append(n.Spec.PodCIDRs, string(v))
		}
		return nil
	})
}

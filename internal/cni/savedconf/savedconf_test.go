package savedconf

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

func TestSaveLoadRemove(t *testing.T) {
	s := Store{Dir: filepath.Join(t.TempDir(), "flannel")}
	conf := []byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","x":1}`)
	if err := s.Save("abc", "eth0", conf); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(filepath.Join(s.Dir, "abc"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("saved file: %v %v", st, err)
	}
	if st, err := os.Stat(s.Dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("data dir: %v %v", st, err)
	}
	sv, err := s.Load("abc")
	if err != nil {
		t.Fatal(err)
	}
	if string(sv.Conf) != string(conf) || sv.IfName != "eth0" || sv.Header != (Header{"1.0.0", "cbr0", "bridge"}) {
		t.Errorf("loaded %+v", sv)
	}
	ids, orphans, err := s.List()
	if err != nil || !slices.Equal(ids, []string{"abc"}) || len(orphans) != 0 {
		t.Errorf("List = %v %v %v", ids, orphans, err)
	}
	if err := s.Remove("abc"); err != nil {
		t.Fatal(err)
	}
	if err := s.Remove("abc"); err != nil {
		t.Fatalf("second Remove: %v", err)
	}
	if _, err := s.Load("abc"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Load after Remove: %v", err)
	}
	ents, _ := os.ReadDir(s.Dir)
	for _, e := range ents {
		if e.Name() != ifnameDir {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

func TestFlannelFileAndOrphans(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	if err := os.WriteFile(filepath.Join(s.Dir, "fromflannel"), []byte(`{"type":"bridge"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	sv, err := s.Load("fromflannel")
	if err != nil || sv.IfName != "" || sv.Header.Type != "bridge" {
		t.Fatalf("Load = %+v, %v", sv, err)
	}
	if err := os.MkdirAll(filepath.Join(s.Dir, ifnameDir), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, ifnameDir, "gone"), []byte("eth0"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(s.Dir, ".fromflannel.tmp-123"), nil, 0o600); err != nil {
		t.Fatal(err)
	}
	ids, orphans, err := s.List()
	if err != nil || !slices.Equal(ids, []string{"fromflannel"}) || !slices.Equal(orphans, []string{"gone"}) {
		t.Errorf("List = %v %v %v", ids, orphans, err)
	}
	if ids, _, err := (Store{Dir: filepath.Join(s.Dir, "none")}).List(); err != nil || ids != nil {
		t.Errorf("List of a missing dir = %v %v", ids, err)
	}
}

func TestInvalidIDs(t *testing.T) {
	s := Store{Dir: t.TempDir()}
	for _, id := range []string{"", "..", ".x", "a/b", "../etc", "a b", "-a"} {
		if err := s.Save(id, "eth0", []byte(`{"type":"bridge"}`)); err == nil {
			t.Errorf("Save(%q) succeeded", id)
		}
		if _, err := s.Load(id); err == nil {
			t.Errorf("Load(%q) succeeded", id)
		}
	}
	for _, id := range []string{"a", "A-1_b.c", "0123456789abcdef"} {
		if err := validID(id); err != nil {
			t.Errorf("validID(%q) = %v", id, err)
		}
	}
}

func TestDecode(t *testing.T) {
	for _, bad := range []string{``, `{`, `[]`, `{"type":""}`, `{"type":"../x"}`, `{"type":1}`, `{"type":"bridge"} x`, `null`} {
		if _, err := Decode([]byte(bad)); !errors.Is(err, ErrCorrupt) {
			t.Errorf("Decode(%q) = %v, want ErrCorrupt", bad, err)
		}
	}
	h, err := Decode([]byte(`{"type":"bridge","cniVersion":"0.3.1","name":"n","ipam":{}}`))
	if err != nil || h != (Header{"0.3.1", "n", "bridge"}) {
		t.Errorf("Decode = %+v %v", h, err)
	}
}

// FuzzDecode checks that Decode never panics and that whatever it accepts
// names a plugin that stays inside CNI_PATH.
func FuzzDecode(f *testing.F) {
	f.Add([]byte(`{"cniVersion":"1.0.0","name":"cbr0","type":"bridge","ipam":{"type":"host-local"}}`))
	f.Add([]byte(`{"type":"bridge"}`))
	f.Add([]byte(`{"type":"../x"}`))
	f.Add([]byte(`{`))
	f.Fuzz(func(t *testing.T, data []byte) {
		h, err := Decode(data)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if h.Type == "" || filepath.Base(h.Type) != h.Type || h.Type == ".." || h.Type == "." {
			t.Fatalf("accepted type %q", h.Type)
		}
	})
}

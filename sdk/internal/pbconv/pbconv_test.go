package pbconv

import "testing"

func TestGet(t *testing.T) {
	var v any = func(s string) int { return len(s) }
	if Get[func(string) int](v)("abc") != 3 {
		t.Fatal("Get lost the function")
	}
	for _, bad := range []any{nil, func(string) string { return "" }} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("Get of %T did not panic", bad)
				}
			}()
			Get[func(string) int](bad)
		}()
	}
}

func TestInverse(t *testing.T) {
	inv := Inverse(map[string]int{"a": 1, "b": 2})
	if len(inv) != 2 || inv[1] != "a" || inv[2] != "b" {
		t.Fatalf("%v", inv)
	}
	defer func() {
		if recover() == nil {
			t.Error("a table that is not one to one was inverted")
		}
	}()
	Inverse(map[string]int{"a": 1, "b": 1})
}

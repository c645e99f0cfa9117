//go:build cgo && linux

package opensslrsa

/*
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>

// The libcrypto.so.3 functions used, by address (dlsym): no OpenSSL
// headers are needed to build. The RSA object is opaque here.
static void *(*ph_d2i_RSAPrivateKey)(void **, const unsigned char **, long);
static int (*ph_RSA_sign)(int, const unsigned char *, unsigned int, unsigned char *, unsigned int *, void *);
static int (*ph_RSA_size)(const void *);
static void (*ph_RSA_free)(void *);
static const char *(*ph_OpenSSL_version)(int);

// ph_load opens the library and finds the functions: 0, or 1 when the
// library is missing, 2 when a function is.
static int ph_load(void) {
	void *lib = dlopen("libcrypto.so.3", RTLD_NOW | RTLD_LOCAL);
	if (lib == NULL) return 1;
	ph_d2i_RSAPrivateKey = dlsym(lib, "d2i_RSAPrivateKey");
	ph_RSA_sign = dlsym(lib, "RSA_sign");
	ph_RSA_size = dlsym(lib, "RSA_size");
	ph_RSA_free = dlsym(lib, "RSA_free");
	ph_OpenSSL_version = dlsym(lib, "OpenSSL_version");
	if (!ph_d2i_RSAPrivateKey || !ph_RSA_sign || !ph_RSA_size || !ph_RSA_free || !ph_OpenSSL_version) return 2;
	return 0;
}

static const char *ph_version(void) { return ph_OpenSSL_version(0); }

// ph_key parses PKCS #1 DER; NULL when OpenSSL refuses it or does not
// take all of it.
static void *ph_key(const unsigned char *der, long n) {
	const unsigned char *p = der;
	void *rsa = ph_d2i_RSAPrivateKey(NULL, &p, n);
	if (rsa != NULL && p != der + n) {
		ph_RSA_free(rsa);
		return NULL;
	}
	return rsa;
}

static int ph_size(void *rsa) { return ph_RSA_size(rsa); }
static void ph_free(void *rsa) { ph_RSA_free(rsa); }

static int ph_sign(int nid, const unsigned char *m, unsigned int mlen, unsigned char *sig, unsigned int *siglen, void *rsa) {
	return ph_RSA_sign(nid, m, mlen, sig, siglen, rsa);
}
*/
import "C"

import (
	"errors"
	"runtime"
	"unsafe"
)

func load() (string, error) {
	switch C.ph_load() {
	case 0:
		return C.GoString(C.ph_version()), nil
	case 1:
		return "", errors.New(C.GoString(C.dlerror()))
	default:
		return "", errors.New("libcrypto.so.3 lacks RSA_sign, d2i_RSAPrivateKey, RSA_size, RSA_free or OpenSSL_version")
	}
}

// key is OpenSSL's RSA object; freed (and cleared, by RSA_free) when the
// key is garbage.
type key struct {
	rsa  unsafe.Pointer
	size int
}

func newKey(der []byte, size int) (*key, error) {
	if len(der) == 0 {
		return nil, errors.New("opensslrsa: empty key")
	}
	p := C.ph_key((*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)))
	if p == nil {
		return nil, errors.New("opensslrsa: OpenSSL did not take the key")
	}
	k := &key{rsa: p, size: int(C.ph_size(p))}
	live.Add(1)
	runtime.AddCleanup(k, func(p unsafe.Pointer) {
		C.ph_free(p)
		live.Add(-1)
	}, p)
	if k.size != size {
		return nil, errors.New("opensslrsa: OpenSSL sees another modulus size")
	}
	return k, nil
}

func (k *key) sign(nid int, digest []byte) ([]byte, error) {
	sig := make([]byte, k.size)
	var n C.uint
	ok := C.ph_sign(C.int(nid), (*C.uchar)(unsafe.Pointer(&digest[0])), C.uint(len(digest)),
		(*C.uchar)(unsafe.Pointer(&sig[0])), &n, k.rsa)
	runtime.KeepAlive(k)
	if ok != 1 {
		return nil, errors.New("opensslrsa: RSA_sign failed")
	}
	if int(n) != k.size {
		return nil, errors.New("opensslrsa: RSA_sign returned a signature of the wrong length")
	}
	return sig, nil
}

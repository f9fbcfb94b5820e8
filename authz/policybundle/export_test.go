package policybundle

// ReadSignedFast is the fast bundle reader alone; ErrNeedsParse is its answer for a bundle it leaves to OPA's.
func ReadSignedFast(data, publicKeyPEM []byte) error {
	_, _, err := readSigned(data, verificationConfig(publicKeyPEM))
	return err
}

var ErrNeedsParse = errNeedsParse

package image_test

import (
	"github.com/opencontainers/go-digest"
	"github.com/opencontainers/image-spec/identity"
)

func chainID(diffIDs []digest.Digest) string { return identity.ChainID(diffIDs).String() }

package main

import (
	"context"
	"fmt"
)

func demo(ctx context.Context, dir, prefix string, args []string) error {
	return fmt.Errorf("demo: not written yet")
}

// Package storetest is a conformance suite for the stores behind httpguard's
// layers: any httpguard.BudgetStore and httpguard.LimitStore, in memory or
// shared by a fleet (Redis), must pass it unchanged. A store's own tests call
// the suite's functions with a constructor for fresh, empty stores.
package storetest

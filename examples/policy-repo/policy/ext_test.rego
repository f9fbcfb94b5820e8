package kith.ext_test

import data.kith.ext

test_developer_delete_in_prod_denied if {
	"developers may not DELETE in prod" in ext.deny with input as {"kith": {
		"method": "DELETE",
		"caller": {"id": "spiffe://example.org/user/scott", "labels": {}},
		"target": {"id": "spiffe://example.org/ns/prod/sa/payments", "labels": {"env": "prod"}},
	}}
}

test_service_delete_allowed if {
	count(ext.deny) == 0 with input as {"kith": {
		"method": "DELETE",
		"caller": {"id": "spiffe://example.org/ns/prod/sa/frontend", "labels": {}},
		"target": {"id": "spiffe://example.org/ns/prod/sa/payments", "labels": {"env": "prod"}},
	}}
}

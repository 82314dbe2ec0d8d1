
$3cad5e6f-7081-429a-8eab-c6d7e8f90a1b6
2025-09-02T09:05:00+02:002025-09-02T09:05:00+02:00@
$e758091a-2b3c-4d45-9f56-718293a4b5c6Matematik 7Å 2025-09-02":
$9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6dÅsa ÖbergIngen*:
$7e6d5c4b-3a29-4817-9605-f4e3d2c1b0a9Bertil BergIngen08@HPZTandläkarbesökb2025-09-02T09:04:59.5+02:00

$3c4d5e6f-7081-4293-a4b5-c6d7e8f90a1b6
2025-06-10T13:22:00+02:002025-08-19T07:45:12+02:007Å"
2025-08-18*
2026-06-122Klass:GRB9
$c0b7e1d2-6f0a-4d8e-8a51-3e2f4b6c7d12Exempelskolan F-9JT
:
$9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6dÅsa ÖbergIngen
2025-08-18
2026-06-12Jh
N
$8c3b1a09-2d4e-4f5a-9b6c-0d1e2f3a4b5cÄrling ÖdmanSkyddad folkbokföring
2025-09-01
2026-01-31
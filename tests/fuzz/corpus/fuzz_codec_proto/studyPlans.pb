
$c536e7f8-091a-4b23-9d34-5f60718293a4:
$9d4c2b1a-3e5f-4a6b-8c7d-1e2f3a4b5c6dÅsa ÖbergIngen:
2024-08-19T08:00:00+02:002025-02-03T14:05:06.789-05:00"�
Gymnasiegemensamma ämnenKärna�"[
1
$8192a3b4-c5d6-47e8-99f0-1b2c3d4e5f60	Svenska 1Läses år 1
2024-08-19"
2025-06-13(d"_
2
$9203b4c5-d6e7-48f9-8a01-2c3d4e5f6071
Engelska 5Förhöjd nivå
2024-08-19"
2025-06-13(Z"�
Individuellt valIndividuellt val�"T
1
$a314c5d6-e7f8-4901-9b12-3d4e5f607182	KörsångÅk 2
2025-08-18"
2026-06-12(<"[
8
$b425d6e7-f809-4a12-8c23-4e5f60718293Fotografisk bildÅk 3
2026-08-17"
2027-06-11(K*1

Studieväg#Eleven siktar på högskolestudier.*;
Övrigt0Anpassning i matematik enligt beslut 2024-09-01.2
2024-08-19:
2027-06-11